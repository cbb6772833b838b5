//! The daemon's log: text for a person at a terminal (colours only
//! there), JSON for the journal or a collector (one object per line, the
//! event's fields — request, registry, service — at the top level), and
//! the few start-up lines an operator reads on standard output, written in
//! the same form so that a JSON reader never meets a line it cannot parse.

use std::sync::OnceLock;

use crate::config::LogFormat;

static FORMAT: OnceLock<LogFormat> = OnceLock::new();

/// Sets up the log, written by a thread of its own: a request's log line
/// is handed over, not written while the request waits (stderr takes one
/// write per line, under a lock every task would queue on). Lines are
/// never dropped: a full buffer makes the writer wait. Keep the guard until
/// the command ends; dropping it writes what is left. `JUMGW_LOG`, when
/// set, is the filter instead of `filter`.
#[must_use]
pub fn init(
    format: LogFormat,
    filter: &str,
) -> Option<tracing_appender::non_blocking::WorkerGuard> {
    let _ = FORMAT.set(format);
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .thread_name("jumgw-log")
        .finish(std::io::stderr());
    let filter = tracing_subscriber::EnvFilter::try_from_env("JUMGW_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(filter))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(crate::config::DEFAULT_LOG_FILTER));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    let done = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .try_init(),
    };
    done.ok().map(|()| guard)
}

/// A start-up line for the operator, on standard output (the address it
/// listens on, the demo tokens): as it is in text, an INFO object in JSON.
pub fn say(message: &str) {
    emit(&mut std::io::stdout().lock(), "INFO", "", message);
}

/// How `serve` ends with an error, in the log's form.
pub fn fatal(message: &str) {
    emit(&mut std::io::stderr().lock(), "ERROR", "error: ", message);
}

fn emit(to: &mut dyn std::io::Write, level: &str, text_prefix: &str, message: &str) {
    let _ = match FORMAT.get() {
        Some(LogFormat::Json) => {
            let line = serde_json::json!({
                "timestamp": crate::time::rfc3339(crate::time::now_ms()),
                "level": level,
                "target": "jumgw",
                "message": message,
            });
            writeln!(to, "{line}")
        }
        _ => writeln!(to, "{text_prefix}{message}"),
    };
    let _ = to.flush();
}
