//! eci-init's log: every line goes to the console (`eci-init: ...`) and to
//! /var/log/eci/init.log with the uptime. Lines written before /var exists are kept and
//! written to the file once it opens.

use std::fs::File;
use std::io::Write;
use std::path::Path;

pub struct Logger {
    console: Box<dyn Write + Send>,
    file: Option<File>,
    pending: Vec<String>,
    uptime: fn() -> f64,
}

impl Logger {
    pub fn new(console: Box<dyn Write + Send>, uptime: fn() -> f64) -> Logger {
        Logger {
            console,
            file: None,
            pending: Vec::new(),
            uptime,
        }
    }

    pub fn line(&mut self, msg: &str) {
        let stamped = format!("[{:>9.3}] {msg}\n", (self.uptime)());
        // The console is the serial port: a failed write has nowhere better to go.
        let _ = self
            .console
            .write_all(format!("eci-init: {msg}\n").as_bytes());
        let _ = self.console.flush();
        match &mut self.file {
            Some(f) => {
                let _ = f.write_all(stamped.as_bytes());
            }
            None => self.pending.push(stamped),
        }
    }

    /// Starts writing to `path` (appending), after the lines logged so far.
    pub fn open_file(&mut self, path: &Path) -> std::io::Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o640)
            .open(path)?;
        for l in self.pending.drain(..) {
            f.write_all(l.as_bytes())?;
        }
        self.file = Some(f);
        Ok(())
    }

    /// Closes the file (before its filesystem is unmounted).
    pub fn close_file(&mut self) {
        if let Some(f) = self.file.take() {
            let _ = f.sync_all();
        }
    }
}

static GLOBAL: std::sync::Mutex<Option<Logger>> = std::sync::Mutex::new(None);

/// Installs the process-wide logger (PID 1 logs from everywhere; it is single-threaded).
pub fn install(logger: Logger) {
    *GLOBAL.lock().unwrap_or_else(|p| p.into_inner()) = Some(logger);
}

fn with(f: impl FnOnce(&mut Logger)) {
    let mut g = GLOBAL.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(l) = g.as_mut() {
        f(l)
    }
}

/// Logs one line through the installed logger.
pub fn say(msg: &str) {
    with(|l| l.line(msg));
}

pub fn open(path: &Path) -> std::io::Result<()> {
    let mut r = Ok(());
    with(|l| r = l.open_file(path));
    r
}

pub fn close() {
    with(|l| l.close_file());
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn early_lines_reach_the_file_once_it_opens() {
        let console = Shared::default();
        let mut log = Logger::new(Box::new(console.clone()), || 1.5);
        log.line("mounting");
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("init.log");
        log.open_file(&path).unwrap();
        log.line("ready");
        log.close_file();
        let file = std::fs::read_to_string(&path).unwrap();
        assert_eq!(file, "[    1.500] mounting\n[    1.500] ready\n");
        let out = String::from_utf8(console.0.lock().unwrap().clone()).unwrap();
        assert_eq!(out, "eci-init: mounting\neci-init: ready\n");
    }
}
