//! Benchmark scenarios. Each prints lines `name: value unit`, its headline figure last.

pub mod connect_rate;
pub mod multi_core;
pub mod pool_scaling;
pub mod pool_vs_peers;
pub mod prefork_sim;

/// The median of `samples` (the upper one of an even count). Panics on an empty list.
pub(crate) fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

/// The runtime the tokio scenarios run on: two workers, as many as this machine has cores.
pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// A scenario: its name on the command line, and the function that runs it.
pub struct Scenario {
    /// The name given on the command line.
    pub name: &'static str,
    /// Runs the scenario and prints its lines.
    pub run: fn(),
}

/// Every scenario, in the order `bench all` runs them.
pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "pool-scaling",
        run: pool_scaling::run,
    },
    Scenario {
        name: "multi-core",
        run: multi_core::run,
    },
    Scenario {
        name: "prefork-sim",
        run: prefork_sim::run,
    },
    Scenario {
        name: "pool-vs-peers",
        run: pool_vs_peers::run,
    },
    Scenario {
        name: "connect-rate",
        run: connect_rate::run,
    },
];
