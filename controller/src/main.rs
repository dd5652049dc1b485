//! `ferrolb-controller`: wiring only (flags, logging, client, the stop signal, `run`).

use clap::Parser;
use ferrolb_controller::{LogFormat, Options, run};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let options = Options::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    match options.log_format {
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init(),
        LogFormat::Text => tracing_subscriber::fmt().with_env_filter(filter).init(),
    }
    let clients = ferrolb_crds::runtime::api_clients().await?;
    let shutdown = ferrolb_crds::runtime::cancel_on_signal()?;
    run(clients, options, shutdown).await
}
