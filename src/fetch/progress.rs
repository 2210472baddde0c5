//! Progress of a fetch on the terminal: one bar for the whole release (bytes,
//! rate, ETA, files done) and one per file in transfer. Nothing is drawn when
//! stderr is not a terminal (a script, a log, a batch job).

use std::borrow::Cow;
use std::io::IsTerminal as _;
use std::sync::atomic::{AtomicU64, Ordering};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

const TOTAL: &str = "{spinner} {elapsed_precise} [{wide_bar}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} ETA {eta} {msg}";
const FILE: &str = "  {wide_msg} [{bar:24}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} {eta}";

/// The bars of one run.
pub struct Progress {
    multi: MultiProgress,
    total: ProgressBar,
    files: u64,
    done: AtomicU64,
}

impl Progress {
    /// Bars for `files` files holding `bytes` bytes still to transfer.
    pub fn new(files: u64, bytes: u64) -> Self {
        let target =
            if std::io::stderr().is_terminal() { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() };
        let multi = MultiProgress::with_draw_target(target);
        let total = multi.add(ProgressBar::new(bytes).with_style(style(TOTAL)));
        total.set_message(format!("0/{files} files"));
        total.enable_steady_tick(std::time::Duration::from_millis(200));
        Self { multi, total, files, done: AtomicU64::new(0) }
    }

    /// A bar for one file of `size` bytes, `start` of which are already here.
    pub fn file(&self, path: &str, size: u64, start: u64) -> FileBar {
        let bar = self.multi.add(ProgressBar::new(size).with_style(style(FILE)));
        bar.set_position(start);
        bar.set_message(shorten(path));
        bar.reset_eta();
        FileBar { bar, total: self.total.clone() }
    }

    /// A file is finished (fetched, failed or present).
    pub fn file_done(&self) {
        let done = self.done.fetch_add(1, Ordering::Relaxed) + 1;
        self.total.set_message(format!("{done}/{} files", self.files));
    }

    /// A line above the bars (or on stderr when they are hidden).
    pub fn note(&self, line: &str) {
        if self.multi.is_hidden() {
            eprintln!("{line}");
        } else {
            let _ = self.multi.println(line);
        }
    }

    /// Removes the bars.
    pub fn finish(&self) {
        self.total.finish_and_clear();
        let _ = self.multi.clear();
    }
}

/// One file's bar, counted in the total too; cleared when dropped.
pub struct FileBar {
    bar: ProgressBar,
    total: ProgressBar,
}

impl FileBar {
    /// `bytes` more arrived.
    pub fn advance(&self, bytes: u64) {
        self.bar.inc(bytes);
        self.total.inc(bytes);
    }

    /// The file starts again from nothing (its partial copy was unusable).
    pub fn restart(&self) {
        // Those bytes are to be transferred again.
        self.total.dec(self.bar.position());
        self.bar.set_position(0);
    }
}

impl Drop for FileBar {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template).expect("a valid progress template").progress_chars("=> ")
}

/// The end of a long path, so the bar stays on one line.
fn shorten(path: &str) -> Cow<'static, str> {
    const WIDTH: usize = 48;
    let count = path.chars().count();
    if count <= WIDTH {
        return Cow::Owned(path.to_owned());
    }
    Cow::Owned(format!("…{}", path.chars().skip(count - WIDTH + 1).collect::<String>()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_paths_keep_their_end() {
        assert_eq!(shorten("tables/subjects.csv"), "tables/subjects.csv");
        let long = format!("dicom/{}/1.dcm", "9".repeat(80));
        let short = shorten(&long);
        assert_eq!(short.chars().count(), 48);
        assert!(short.starts_with('…') && short.ends_with("/1.dcm"), "{short}");
    }
}
