//! Sensor models: a daily cycle, a random walk, noise, drift, spikes and dropouts, per kind.

use iotseal_proto::reading::SensorKind;
use serde::{Deserialize, Serialize};

use super::rng::SimRng;

/// Which physical quantity a model simulates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SensorModelKind {
    /// Air temperature: daily cycle, weather random walk, noise, rare spikes.
    Temperature,
    /// Relative humidity, anti-correlated with the daily temperature cycle.
    Humidity,
    /// Barometric pressure: slow random walk around 1013 hPa.
    Pressure,
    /// A GPS track: a vehicle moving with changing heading (latitude and longitude).
    Gps,
    /// A 3-axis accelerometer: gravity plus vibration and occasional bumps.
    Accelerometer,
    /// Heart rate: resting level with activity episodes.
    HeartRate,
    /// A power meter: base load plus appliances switching; energy accumulates.
    PowerMeter,
}

/// The state of one simulated sensor.
#[derive(Clone, Debug)]
pub struct SensorModel {
    kind: SensorModelKind,
    walk: f64,
    drift_per_hour: f64,
    lat: f64,
    lon: f64,
    heading: f64,
    activity: f64,
    appliances: f64,
    energy_wh: f64,
    last_t: f64,
    /// Probability that a sample is missing (a dropout).
    pub dropout: f64,
    /// Probability of a spike (an outlier value).
    pub spike: f64,
}

impl SensorModel {
    /// A model of `kind`, with per-device variation drawn from `rng`.
    pub fn new(kind: SensorModelKind, rng: &mut SimRng) -> Self {
        Self {
            kind,
            walk: 0.0,
            drift_per_hour: rng.normal() * 0.05,
            lat: 48.85 + rng.normal() * 0.05,
            lon: 2.35 + rng.normal() * 0.05,
            heading: rng.unit() * 360.0,
            activity: 0.0,
            appliances: 0.0,
            energy_wh: rng.unit() * 1000.0,
            last_t: 0.0,
            dropout: 0.01,
            spike: 0.002,
        }
    }

    /// The sensor kinds this model emits.
    pub fn kinds(&self) -> &'static [SensorKind] {
        match self.kind {
            SensorModelKind::Temperature => &[SensorKind::Temperature],
            SensorModelKind::Humidity => &[SensorKind::Humidity],
            SensorModelKind::Pressure => &[SensorKind::Pressure],
            SensorModelKind::Gps => &[SensorKind::Latitude, SensorKind::Longitude],
            SensorModelKind::Accelerometer => {
                &[SensorKind::AccelX, SensorKind::AccelY, SensorKind::AccelZ]
            }
            SensorModelKind::HeartRate => &[SensorKind::HeartRate],
            SensorModelKind::PowerMeter => &[SensorKind::Power, SensorKind::Energy],
        }
    }

    /// Samples at `t` seconds of simulated time of day (`day_secs` into the cycle); `None`
    /// for a dropout.
    pub fn sample(
        &mut self,
        t: f64,
        day_secs: f64,
        rng: &mut SimRng,
    ) -> Option<Vec<(SensorKind, f32)>> {
        let dt = (t - self.last_t).max(0.0);
        self.last_t = t;
        if rng.chance(self.dropout) {
            return None;
        }
        let day = (2.0 * std::f64::consts::PI * (day_secs / 86_400.0 - 0.375)).sin();
        let drift = self.drift_per_hour * t / 3600.0;
        let spike = if rng.chance(self.spike) {
            rng.normal() * 15.0
        } else {
            0.0
        };
        self.walk = (self.walk + rng.normal() * 0.05 * dt.sqrt()).clamp(-5.0, 5.0);
        let v = match self.kind {
            SensorModelKind::Temperature => {
                vec![(
                    SensorKind::Temperature,
                    18.0 + 6.0 * day + self.walk + drift + rng.normal() * 0.1 + spike,
                )]
            }
            SensorModelKind::Humidity => {
                vec![(
                    SensorKind::Humidity,
                    (55.0 - 15.0 * day - 2.0 * self.walk + rng.normal() * 0.5 + spike)
                        .clamp(0.0, 100.0),
                )]
            }
            SensorModelKind::Pressure => vec![(
                SensorKind::Pressure,
                1013.0 + 4.0 * self.walk + drift + rng.normal() * 0.2,
            )],
            SensorModelKind::Gps => {
                self.heading = (self.heading + rng.normal() * 5.0 * dt.sqrt()).rem_euclid(360.0);
                let speed = 12.0; // m/s
                let d = speed * dt;
                let h = self.heading.to_radians();
                self.lat += d * h.cos() / 111_320.0;
                self.lon += d * h.sin() / (111_320.0 * self.lat.to_radians().cos());
                let noise = 3.0 / 111_320.0;
                vec![
                    (SensorKind::Latitude, self.lat + rng.normal() * noise),
                    (SensorKind::Longitude, self.lon + rng.normal() * noise),
                ]
            }
            SensorModelKind::Accelerometer => {
                let bump = if rng.chance(0.02) {
                    rng.normal() * 6.0
                } else {
                    0.0
                };
                vec![
                    (SensorKind::AccelX, rng.normal() * 0.3 + bump),
                    (SensorKind::AccelY, rng.normal() * 0.3),
                    (SensorKind::AccelZ, 9.81 + rng.normal() * 0.3 + bump * 0.5),
                ]
            }
            SensorModelKind::HeartRate => {
                if rng.chance(0.01) {
                    self.activity = rng.unit() * 80.0;
                }
                self.activity *= (-dt / 300.0).exp();
                vec![(
                    SensorKind::HeartRate,
                    62.0 + self.activity + 3.0 * day + rng.normal() * 1.5 + spike,
                )]
            }
            SensorModelKind::PowerMeter => {
                if rng.chance(0.05) {
                    self.appliances = (rng.unit() * 3.0).floor() * 1200.0;
                }
                let p =
                    (150.0 + 80.0 * (day + 1.0) + self.appliances + rng.normal() * 10.0).max(0.0);
                self.energy_wh += p * dt / 3600.0;
                vec![(SensorKind::Power, p), (SensorKind::Energy, self.energy_wh)]
            }
        };
        Some(v.into_iter().map(|(k, x)| (k, x as f32)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn models_are_plausible_and_reproducible() {
        for kind in [
            SensorModelKind::Temperature,
            SensorModelKind::Humidity,
            SensorModelKind::Pressure,
            SensorModelKind::Gps,
            SensorModelKind::Accelerometer,
            SensorModelKind::HeartRate,
            SensorModelKind::PowerMeter,
        ] {
            let run = |seed| {
                let mut rng = SimRng::new(seed);
                let mut m = SensorModel::new(kind, &mut rng);
                (0..500)
                    .filter_map(|i| m.sample(f64::from(i), f64::from(i) * 60.0, &mut rng))
                    .collect::<Vec<_>>()
            };
            let a = run(7);
            assert_eq!(a, run(7), "{kind:?} reproducible");
            assert_ne!(a, run(8), "{kind:?} varies with the seed");
            assert!(a.len() > 450, "{kind:?}: few dropouts");
            for v in a.iter().flatten() {
                assert!(v.1.is_finite());
                match v.0 {
                    SensorKind::Humidity => assert!((0.0..=100.0).contains(&v.1)),
                    SensorKind::Pressure => assert!((950.0..1080.0).contains(&v.1)),
                    SensorKind::HeartRate => assert!((30.0..250.0).contains(&v.1)),
                    SensorKind::Power => assert!(v.1 >= 0.0),
                    _ => {}
                }
            }
        }
    }
}
