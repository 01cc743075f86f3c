//! A real device in under 40 lines: pins the gateway, reads a (simulated) thermometer once a
//! second, sends every 10 readings, and never forgets one before the gateway acknowledges it.
//!
//! `cargo run -p iotseal-device --example device -- gateway.pub.toml device.key`
//! (make the key with `iotseal device keygen --id my-sensor --out device.key`, register it with
//! `iotseal device add --key-file device.key ...`).

use std::time::Duration;

use iotseal_device::{
    DeviceClient, DeviceOptions, GatewayPins, HttpsTransport, IdentityFile, IdentityFileExt,
};
use iotseal_proto::reading::SensorKind;

type Error = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let mut args = std::env::args().skip(1);
    let pins = GatewayPins::load(args.next().unwrap_or("gateway.pub.toml".into()).as_ref())?;
    let identity = IdentityFile::load(args.next().unwrap_or("device.key".into()).as_ref())?;
    let options = DeviceOptions {
        queue_file: Some("device-queue.json".into()),
        ..DeviceOptions::default()
    };
    let transport = HttpsTransport::new(&pins)?;
    let mut device =
        DeviceClient::try_new(identity.device_config(&pins, None)?, transport, options)?;
    for i in 0u32.. {
        let celsius = 20.0 + (i as f32 / 60.0).sin() * 3.0;
        device.push(vec![(SensorKind::Temperature, celsius)], Vec::new())?;
        if device.pending() >= 10 {
            match device.flush().await {
                Ok(r) => println!("{} readings acknowledged", r.acknowledged),
                Err(e) => eprintln!("will retry: {e}"),
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    Ok(())
}
