//! Scoring segmentation masks: Custodian's Dice and HD95 over N pairs of
//! 512 × 512 × 100 uint8 masks stored as `.nii.gz`, beside a NumPy Dice over
//! the same files (`benches/scoring_numpy.py`).
//!
//! ```text
//! MASKS=1000 PYTHON=/path/to/venv/bin/python cargo bench --bench scoring
//! ```
//!
//! - `MASKS` (default 1000): pairs to generate and score.
//! - `DIR` (default `$TMPDIR/custodian-scoring-<MASKS>`): where the files are
//!   written; files already there are reused.
//! - `THREADS` (default `1,2`): the scoring runs, one per thread count.
//! - `PYTHON` (default `python3`): a Python with nibabel and NumPy.
//!
//! Truth masks are ellipsoids with a lobed surface; predictions are shifted,
//! rescaled, differently lobed copies with a noisy boundary and a few false
//! islands anywhere in the volume, so both Dice and HD95 are non-trivial.
//! Each measured run is a child process (this binary, re-executed), so its
//! peak resident memory (`VmHWM`) is the scoring's alone.

#![allow(clippy::cast_precision_loss, clippy::cast_possible_truncation, clippy::cast_sign_loss)] // figures and voxel coordinates

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use custodian::scoring::bootstrap::Rng;
use custodian::scoring::{MaskCase, MaskOptions, MaskSource, ReadOptions, masks, metrics, score_masks};

const DIMS: [usize; 3] = [512, 512, 100];
const SPACING: [f32; 3] = [0.7, 0.7, 2.5];

fn main() {
    let n: usize = std::env::var("MASKS").ok().and_then(|v| v.parse().ok()).unwrap_or(1000);
    let dir = std::env::var_os("DIR")
        .map_or_else(|| std::env::temp_dir().join(format!("custodian-scoring-{n}")), PathBuf::from);
    if let Ok(mode) = std::env::var("SCORING_CHILD") {
        let threads = std::env::var("SCORING_THREADS").ok().and_then(|v| v.parse().ok()).unwrap_or(1);
        child(&dir, n, &mode, threads);
        return;
    }
    std::fs::create_dir_all(&dir).expect("the bench directory");
    let free = rustix::fs::statvfs(&dir).map_or(u64::MAX, |s| s.f_bavail * s.f_frsize);
    // About 100 KiB per compressed mask; ask for three times that.
    let need = n as u64 * 2 * 300 * 1024;
    assert!(free > need, "{} has {} MiB free, the masks need up to {} MiB", dir.display(), free >> 20, need >> 20);
    let started = Instant::now();
    let written = generate(&dir, n);
    let bytes: u64 =
        (0..n).flat_map(|i| [truth_path(&dir, i), prediction_path(&dir, i)]).map(|p| p.metadata().unwrap().len()).sum();
    println!(
        "{n} pairs of {}×{}×{} uint8 masks in {} ({written} written in {:.1} s, {:.1} MiB gzipped, {} KiB per file)",
        DIMS[0],
        DIMS[1],
        DIMS[2],
        dir.display(),
        started.elapsed().as_secs_f64(),
        bytes as f64 / f64::from(1 << 20),
        bytes / (2 * n as u64) / 1024
    );
    println!(
        "{:<40} {:>9} {:>10} {:>12} {:>10} {:>10}",
        "run", "seconds", "ms/case", "peak MiB", "mean Dice", "mean HD95"
    );
    let threads = std::env::var("THREADS").unwrap_or_else(|_| "1,2".into());
    let mut first = None;
    for t in threads.split(',').filter_map(|t| t.trim().parse::<usize>().ok()) {
        let run = measure_child(&dir, n, "full", t);
        print_run(&format!("custodian Dice + HD95, {t} thread(s)"), n, &run);
        first.get_or_insert(run);
    }
    let dice_only = measure_child(&dir, n, "dice", 1);
    print_run("custodian Dice only, 1 thread", n, &dice_only);
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/scoring_numpy.py");
    let out = Command::new(&python).arg(&script).arg(&dir).arg(n.to_string()).output().expect("runs Python");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let numpy = parse(&String::from_utf8_lossy(&out.stdout));
    print_run("NumPy Dice (nibabel), 1 thread", n, &numpy);
    if let Some(full) = first {
        println!(
            "ratio NumPy Dice time / custodian Dice+HD95 time: {:.2}; / custodian Dice-only time: {:.2}",
            numpy.seconds / full.seconds,
            numpy.seconds / dice_only.seconds
        );
        println!("ratio NumPy peak memory / custodian peak memory: {:.2}", numpy.peak_kib / full.peak_kib);
        println!("mean Dice difference (custodian - NumPy): {:.3e}", full.dice - numpy.dice);
    }
}

fn truth_path(dir: &Path, i: usize) -> PathBuf {
    dir.join(format!("case_{i:04}_truth.nii.gz"))
}

fn prediction_path(dir: &Path, i: usize) -> PathBuf {
    dir.join(format!("case_{i:04}_pred.nii.gz"))
}

/// What a measured run reports.
struct Run {
    seconds: f64,
    peak_kib: f64,
    dice: f64,
    hd95: f64,
}

fn print_run(name: &str, n: usize, run: &Run) {
    println!(
        "{name:<40} {:>9.1} {:>10.1} {:>12.1} {:>10.4} {:>10}",
        run.seconds,
        run.seconds * 1000.0 / n as f64,
        run.peak_kib / 1024.0,
        run.dice,
        if run.hd95.is_nan() { "-".into() } else { format!("{:.2}", run.hd95) }
    );
}

/// `seconds=… peak_kib=… dice=… hd95=…` on one line.
fn parse(line: &str) -> Run {
    let field = |name: &str| -> f64 {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(name).and_then(|v| v.strip_prefix('=')))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {line:?}"))
    };
    Run { seconds: field("seconds"), peak_kib: field("peak_kib"), dice: field("dice"), hd95: field("hd95") }
}

fn measure_child(dir: &Path, n: usize, mode: &str, threads: usize) -> Run {
    let out = Command::new(std::env::current_exe().expect("this bench"))
        .env("SCORING_CHILD", mode)
        .env("SCORING_THREADS", threads.to_string())
        .env("DIR", dir)
        .env("MASKS", n.to_string())
        .output()
        .expect("runs the child");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    parse(&String::from_utf8_lossy(&out.stdout))
}

fn peak_kib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(f64::NAN)
}

fn child(dir: &Path, n: usize, mode: &str, threads: usize) {
    let started = Instant::now();
    let (dice, hd95) = if mode == "dice" {
        let options = ReadOptions::default();
        let mut sum = 0.0;
        for i in 0..n {
            let truth = masks::read_mask(&MaskSource::File(truth_path(dir, i)), &options).expect("reads");
            let prediction = masks::read_mask(&MaskSource::File(prediction_path(dir, i)), &options).expect("reads");
            sum += metrics::dice(&truth, &prediction);
        }
        (sum / n as f64, f64::NAN)
    } else {
        let cases = (0..n).map(|i| MaskCase {
            id: format!("CASE-{i:04}"),
            site: format!("site-{}", i % 4),
            truth: MaskSource::File(truth_path(dir, i)),
            prediction: MaskSource::File(prediction_path(dir, i)),
        });
        let scores = score_masks(cases, &MaskOptions { threads, ..MaskOptions::default() }).expect("scores");
        let value = |name: &str| scores.overall.iter().find(|m| m.metric == name).and_then(|m| m.value).unwrap();
        (value("dice"), value("hd95"))
    };
    let seconds = started.elapsed().as_secs_f64();
    println!("seconds={seconds} peak_kib={} dice={dice} hd95={hd95}", peak_kib());
}

/// Writes the pairs not yet on disk, on two threads; returns how many files were written.
fn generate(dir: &Path, n: usize) -> usize {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let written = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| {
                let mut volume = vec![0_u8; DIMS[0] * DIMS[1] * DIMS[2]];
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= n {
                        break;
                    }
                    let (truth, prediction) = (truth_path(dir, i), prediction_path(dir, i));
                    if truth.exists() && prediction.exists() {
                        continue;
                    }
                    let mut rng = Rng::new(0xB10B_0000 + i as u64);
                    let shape = Blob::random(&mut rng);
                    shape.draw(&mut volume, &mut rng, 0.0);
                    write_nifti(&truth, &volume);
                    shape.jittered(&mut rng).draw(&mut volume, &mut rng, 0.04);
                    for _ in 0..rng.below(4) {
                        Blob::island(&mut rng).add(&mut volume);
                    }
                    write_nifti(&prediction, &volume);
                    written.fetch_add(2, std::sync::atomic::Ordering::Relaxed);
                }
            });
        }
    });
    written.into_inner()
}

fn uniform(rng: &mut Rng, lo: f64, hi: f64) -> f64 {
    lo + (hi - lo) * (rng.next_u64() >> 11) as f64 / (1_u64 << 53) as f64
}

/// An ellipsoid with a lobed surface: `r² <= 1 + lobes·sin(a·x)·sin(b·y)`.
#[derive(Clone, Copy)]
struct Blob {
    centre: [f64; 3],
    radii: [f64; 3],
    lobes: f64,
    frequency: [f64; 2],
}

impl Blob {
    fn random(rng: &mut Rng) -> Self {
        let radii = [uniform(rng, 25.0, 70.0), uniform(rng, 25.0, 70.0), uniform(rng, 8.0, 25.0)];
        Blob {
            centre: [0, 1, 2].map(|a| uniform(rng, radii[a] + 10.0, DIMS[a] as f64 - radii[a] - 10.0)),
            radii,
            lobes: uniform(rng, 0.05, 0.25),
            frequency: [uniform(rng, 2.0, 6.0), uniform(rng, 2.0, 6.0)],
        }
    }

    fn jittered(self, rng: &mut Rng) -> Self {
        Blob {
            centre: [0, 1, 2].map(|a| self.centre[a] + uniform(rng, -0.15, 0.15) * self.radii[a]),
            radii: self.radii.map(|r| r * uniform(rng, 0.85, 1.15)),
            lobes: uniform(rng, 0.05, 0.25),
            frequency: [uniform(rng, 2.0, 6.0), uniform(rng, 2.0, 6.0)],
        }
    }

    fn island(rng: &mut Rng) -> Self {
        let r = uniform(rng, 1.5, 5.0);
        Blob {
            centre: [0, 1, 2].map(|a| uniform(rng, 5.0, DIMS[a] as f64 - 5.0)),
            radii: [r, r, r / 3.0 + 0.6],
            lobes: 0.0,
            frequency: [1.0, 1.0],
        }
    }

    fn bounds(&self, axis: usize) -> std::ops::Range<usize> {
        let reach = self.radii[axis] * 1.3 + 1.0;
        let lo = (self.centre[axis] - reach).max(0.0) as usize;
        let hi = ((self.centre[axis] + reach).ceil() as usize + 1).min(DIMS[axis]);
        lo..hi
    }

    /// Clears the volume and draws the blob; voxels within `noise` of the
    /// surface are set at random.
    fn draw(&self, volume: &mut [u8], rng: &mut Rng, noise: f64) {
        volume.fill(0);
        self.paint(volume, rng, noise);
    }

    fn add(&self, volume: &mut [u8]) {
        self.paint(volume, &mut Rng::new(0), 0.0);
    }

    fn paint(&self, volume: &mut [u8], rng: &mut Rng, noise: f64) {
        for z in self.bounds(2) {
            for y in self.bounds(1) {
                for x in self.bounds(0) {
                    let d = [x as f64, y as f64, z as f64];
                    let r2: f64 = (0..3).map(|a| ((d[a] - self.centre[a]) / self.radii[a]).powi(2)).sum();
                    let u = (d[0] - self.centre[0]) / self.radii[0];
                    let v = (d[1] - self.centre[1]) / self.radii[1];
                    let edge = 1.0 + self.lobes * (self.frequency[0] * u).sin() * (self.frequency[1] * v).sin();
                    let inside =
                        if noise > 0.0 && (r2 - edge).abs() < noise { rng.next_u64() & 1 == 1 } else { r2 <= edge };
                    if inside {
                        volume[x + DIMS[0] * (y + DIMS[1] * z)] = 1;
                    }
                }
            }
        }
    }
}

/// A NIfTI-1 uint8 `.nii.gz` with the bench's spacing.
fn write_nifti(path: &Path, voxels: &[u8]) {
    let mut h = vec![0_u8; 352];
    h[0..4].copy_from_slice(&348_i32.to_le_bytes());
    let dims = DIMS.map(|d| i16::try_from(d).unwrap());
    for (i, v) in [3, dims[0], dims[1], dims[2], 1, 1, 1, 1].iter().enumerate() {
        h[40 + 2 * i..42 + 2 * i].copy_from_slice(&v.to_le_bytes());
    }
    h[70..72].copy_from_slice(&2_i16.to_le_bytes()); // uint8
    h[72..74].copy_from_slice(&8_i16.to_le_bytes());
    h[76..80].copy_from_slice(&1.0_f32.to_le_bytes());
    for (i, s) in SPACING.iter().enumerate() {
        h[80 + 4 * i..84 + 4 * i].copy_from_slice(&s.to_le_bytes());
    }
    h[108..112].copy_from_slice(&352.0_f32.to_le_bytes());
    h[252..254].copy_from_slice(&1_i16.to_le_bytes()); // qform_code: scanner
    h[344..348].copy_from_slice(b"n+1\0");
    let partial = path.with_extension("partial");
    let file = BufWriter::new(std::fs::File::create(&partial).expect("creates"));
    let mut gz = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
    gz.write_all(&h).and_then(|()| gz.write_all(voxels)).expect("writes");
    gz.finish().and_then(|mut f| f.flush()).expect("finishes");
    std::fs::rename(&partial, path).expect("renames");
}
