//! Logging: a `tracing` subscriber writing text or JSON lines.
//!
//! Every request runs in a span carrying its request id, so every line logged
//! while serving it names the request. Credentials, PHI and secrets are never
//! fields of a log line.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::{LogConfig, LogFormat};

/// Quiet defaults for chatty dependencies, appended to the configured filter.
const DEPENDENCY_DIRECTIVES: &[&str] = &["sqlx=warn", "hyper_util=warn", "h2=warn", "tower=warn", "reqwest=warn"];

/// Installs the global subscriber; later calls are ignored (tests call it repeatedly).
pub fn init(config: &LogConfig) {
    let mut filter = EnvFilter::try_new(&config.filter).unwrap_or_else(|_| EnvFilter::new("info"));
    for directive in DEPENDENCY_DIRECTIVES {
        if !config.filter.contains(directive.split('=').next().unwrap_or_default()) {
            filter = filter.add_directive(directive.parse().expect("static directive"));
        }
    }
    let registry = tracing_subscriber::registry().with(filter);
    let _ = match config.format {
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_current_span(true)
                    .with_span_list(false)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
        LogFormat::Text => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
            )
            .try_init(),
    };
}
