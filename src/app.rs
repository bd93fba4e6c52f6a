//! The composition root: the daemon's domain services, built once from the
//! configuration and shared by every request.

use crate::config::Config;
use crate::domain::clock::Clock;
use crate::domain::jobs::JobRegistry;
use crate::domain::tokens::{AuthThrottle, TokenService};
use crate::state::Store;
use std::sync::Arc;

pub struct App {
    pub config: Config,
    pub clock: Arc<Clock>,
    pub tokens: TokenService,
    pub jobs: Arc<JobRegistry>,
    pub throttle: AuthThrottle,
}

impl App {
    pub fn open(config: Config) -> anyhow::Result<Arc<App>> {
        let store = Arc::new(Store::open(&config.state_dir)?);
        let clock = Arc::new(Clock::default());
        let tokens = TokenService::load(store.clone(), clock.clone())?;
        let jobs = Arc::new(JobRegistry::load(store, clock.clone())?);
        Ok(Arc::new(App {
            config,
            clock,
            tokens,
            jobs,
            throttle: AuthThrottle::new(),
        }))
    }
}
