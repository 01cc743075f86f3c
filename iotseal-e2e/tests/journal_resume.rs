//! The SDK resumes from its queue journal after a restart: the readings it had not delivered
//! are sent once, with their message ids; new readings get ids never used before; nothing is
//! lost or stored twice (real gateway over HTTPS, SQLite in a temporary directory).

use iotseal_device::{
    AdminClient, DeviceClient, DeviceOptions, GatewayPins, HttpsTransport, IdentityFile,
    IdentityFileExt,
};
use iotseal_gateway::local::start_local;
use iotseal_proto::SigAlg;
use iotseal_proto::reading::SensorKind;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_resumes_from_the_journal_without_loss_or_duplicates() {
    let p = iotseal_device::default_provider();
    let dir = std::env::temp_dir().join(format!(
        "iotseal-journal-resume-{}",
        hex::encode(p.random_vec(6).unwrap())
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let gw = start_local(&dir.join("gw"), |_| {}).await.unwrap();
    let pins: GatewayPins = toml::from_str(&gw.public.to_toml().unwrap()).unwrap();
    let admin = AdminClient::new(&pins, &gw.token).unwrap();
    let identity = IdentityFile::generate(&p, "resume-1", SigAlg::Ed25519).unwrap();
    admin
        .add_device("resume-1", SigAlg::Ed25519, &identity.public_key)
        .await
        .unwrap();
    let opts = DeviceOptions {
        queue_file: Some(dir.join("queue.journal")),
        ..DeviceOptions::default()
    };
    let open = || {
        DeviceClient::try_new(
            identity.device_config(&pins, None).unwrap(),
            HttpsTransport::new(&pins).unwrap(),
            opts.clone(),
        )
        .unwrap()
    };
    let reading = |i: u64| vec![(SensorKind::Temperature, i as f32)];

    // First run: five delivered, five queued when the device stops.
    let mut dev = open();
    for i in 0..5 {
        assert_eq!(dev.push(reading(i), Vec::new()).unwrap(), i + 1);
    }
    assert_eq!(dev.flush().await.unwrap().acknowledged, 5);
    for i in 5..10 {
        assert_eq!(dev.push(reading(i), Vec::new()).unwrap(), i + 1);
    }
    assert_eq!(dev.pending(), 5);
    drop(dev);

    // Restart: the five come back with their ids; new ones continue after them.
    let mut dev = open();
    assert_eq!(dev.pending(), 5);
    assert_eq!(dev.next_msg_id(), 11);
    assert_eq!(dev.push(reading(10), Vec::new()).unwrap(), 11);
    let r = dev.flush().await.unwrap();
    assert_eq!((r.acknowledged, r.pending), (6, 0));
    drop(dev);

    // Another restart: nothing pending, ids still not reused.
    let mut dev = open();
    assert_eq!(dev.pending(), 0);
    assert_eq!(dev.push(reading(11), Vec::new()).unwrap(), 12);
    assert_eq!(dev.flush().await.unwrap().acknowledged, 1);

    let mut ids: Vec<u64> = admin
        .readings("resume-1")
        .await
        .unwrap()
        .iter()
        .map(|r| r.msg_id)
        .collect();
    ids.sort_unstable();
    assert_eq!(
        ids,
        (1..=12).collect::<Vec<_>>(),
        "each reading stored once"
    );
    gw.handle.stop().await.unwrap();
    let _ = std::fs::remove_dir_all(dir);
}
