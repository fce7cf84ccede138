//! `log` facade on the console: `[seconds] LEVEL target: message`.
use log::{LevelFilter, Log, Metadata, Record};

struct ConsoleLogger;

static LOGGER: ConsoleLogger = ConsoleLogger;

impl Log for ConsoleLogger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        // The AML interpreter (`acpi` crate) narrates at info level; its
        // warnings and errors still show, the rest only when debugging.
        let quiet = metadata.target().starts_with("acpi") && log::max_level() < LevelFilter::Debug;
        if quiet && metadata.level() > log::Level::Warn {
            return false;
        }
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let ns = crate::arch::now_ns();
        crate::kprintln!(
            "[{:5}.{:06}] {:5} {}: {}",
            ns / 1_000_000_000,
            (ns / 1000) % 1_000_000,
            record.level(),
            record.target().trim_start_matches("kernel::"),
            record.args()
        );
    }

    fn flush(&self) {}
}

/// Starts logging at `level` (`error`, `warn`, `info`, `debug`, `trace`, `off`).
pub fn init(level: Option<&str>) {
    let filter = level
        .and_then(|l| l.parse::<LevelFilter>().ok())
        .unwrap_or(LevelFilter::Info);
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(filter);
}
