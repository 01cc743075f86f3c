//! A customizable simulation of many devices: sensor models with realistic behaviour,
//! groups with their own suite and rate, network impairments, reproducible with a seed.

mod impair;
mod rng;
mod runner;
mod scenario;
mod sensors;

pub use impair::{Impaired, Impairments};
pub use rng::SimRng;
pub use runner::{GroupSummary, SimProgress, Simulation, Summary};
pub use scenario::{Group, MqttScenario, Scenario, TransportKind};
pub use sensors::{SensorModel, SensorModelKind};
