//! MQTT broker addresses, parsed where the settings are checked (the MQTT binding uses the
//! same type, so that what validation accepts is what the binding connects to).

/// A broker address: `mqtt://HOST[:PORT]` (plain, port 1883) or `mqtts://HOST[:PORT]` (TLS,
/// port 8883). A bare `HOST:PORT` is plain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokerUrl {
    /// TLS to the broker.
    pub tls: bool,
    /// Host name or IP address (without brackets).
    pub host: String,
    /// Port.
    pub port: u16,
}

impl BrokerUrl {
    /// Parses a broker URL.
    pub fn parse(url: &str) -> Result<Self, String> {
        let url = url.trim();
        let (tls, rest) = if let Some(r) = url.strip_prefix("mqtts://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("mqtt://") {
            (false, r)
        } else if url.contains("://") {
            return Err(format!("{url:?}: the scheme must be mqtt:// or mqtts://"));
        } else {
            (false, url)
        };
        let rest = rest.trim_end_matches('/');
        let default_port = if tls { 8883 } else { 1883 };
        let (host, port) = if let Some(r) = rest.strip_prefix('[') {
            // [v6]:port
            let (h, after) = r
                .split_once(']')
                .ok_or_else(|| format!("{url:?}: unclosed '['"))?;
            let port = match after.strip_prefix(':') {
                Some(p) => p.parse().map_err(|_| format!("{url:?}: bad port"))?,
                None if after.is_empty() => default_port,
                None => return Err(format!("{url:?}: unexpected {after:?}")),
            };
            (h.to_string(), port)
        } else {
            match rest.rsplit_once(':') {
                Some((h, p)) => (
                    h.to_string(),
                    p.parse().map_err(|_| format!("{url:?}: bad port"))?,
                ),
                None => (rest.to_string(), default_port),
            }
        };
        if host.is_empty() || host.contains(['/', '?', '@']) {
            return Err(format!(
                "{url:?}: expected mqtt://HOST:PORT or mqtts://HOST:PORT"
            ));
        }
        Ok(Self { tls, host, port })
    }
}

#[cfg(test)]
mod tests {
    use super::BrokerUrl;

    #[test]
    fn broker_urls() {
        let u = BrokerUrl::parse("mqtts://broker.example:8884/").unwrap();
        assert_eq!(
            (u.tls, u.host.as_str(), u.port),
            (true, "broker.example", 8884)
        );
        let u = BrokerUrl::parse("mqtt://[::1]").unwrap();
        assert_eq!((u.tls, u.host.as_str(), u.port), (false, "::1", 1883));
        let u = BrokerUrl::parse("localhost:1884").unwrap();
        assert_eq!((u.tls, u.port), (false, 1884));
        assert_eq!(BrokerUrl::parse("mqtts://h").unwrap().port, 8883);
        for bad in [
            "http://h:1",
            "mqtt://",
            "mqtt://h:x",
            "mqtt://[::1",
            "mqtt://u@h",
        ] {
            assert!(BrokerUrl::parse(bad).is_err(), "{bad} accepted");
        }
    }
}
