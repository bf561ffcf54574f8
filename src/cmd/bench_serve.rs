//! `ofa bench serve`: the HTTP service under a real load generator (`wrk`) on loopback.
//!
//! Starts `ofa serve` on the package as a child process (so its memory is its own), then measures
//! cold searches and first downloads one by one, cached `GET /v1/subnets/{id}` and cached
//! `POST /v1/subnets` under `wrk`, and the server's resident memory sampled every second over a
//! sustained cached-GET run.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use ofa_schema::bench::{BenchReport, Rss, ServeReport, Summary};
use serde_json::{json, Value};

/// Arguments of `ofa bench serve`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The package to serve (with accuracy.safetensors and at least one latency table).
    #[arg(long)]
    package: PathBuf,
    /// wrk connections.
    #[arg(long, default_value_t = 32)]
    connections: u32,
    /// Seconds of each wrk throughput run.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Seconds of the sustained run over which RSS is sampled.
    #[arg(long, default_value_t = 60)]
    rss_seconds: u64,
    /// Cold searches and first downloads timed.
    #[arg(long, default_value_t = 10)]
    cold: usize,
    /// One JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn rss_mib(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = s
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

/// A wrk run: requests/s, p99 latency (ms), errors (socket errors + non-2xx/3xx).
struct Wrk {
    rps: f64,
    p99_ms: f64,
    errors: u64,
}

fn wrk(
    url: &str,
    connections: u32,
    seconds: u64,
    script: Option<&std::path::Path>,
) -> anyhow::Result<Wrk> {
    let mut c = Command::new("wrk");
    c.args([
        "-t",
        "2",
        "-c",
        &connections.to_string(),
        "-d",
        &format!("{seconds}s"),
        "--latency",
    ]);
    if let Some(s) = script {
        c.arg("-s").arg(s);
    }
    let out = c.arg(url).output().context("cannot run wrk")?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!(
            "wrk failed: {}{}",
            text,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let ms = |v: &str| -> Option<f64> {
        let (num, unit) = v.split_at(v.find(|c: char| c.is_ascii_alphabetic())?);
        let n: f64 = num.parse().ok()?;
        Some(match unit {
            "us" => n / 1e3,
            "ms" => n,
            "s" => n * 1e3,
            "m" => n * 6e4,
            _ => return None,
        })
    };
    let mut w = Wrk {
        rps: f64::NAN,
        p99_ms: f64::NAN,
        errors: 0,
    };
    for l in text.lines().map(str::trim) {
        if let Some(v) = l.strip_prefix("Requests/sec:") {
            w.rps = v.trim().parse().unwrap_or(f64::NAN);
        } else if let Some(v) = l.strip_prefix("99%") {
            w.p99_ms = ms(v.trim()).unwrap_or(f64::NAN);
        } else if let Some(v) = l.strip_prefix("Non-2xx or 3xx responses:") {
            w.errors += v.trim().parse::<u64>().unwrap_or(0);
        } else if let Some(v) = l.strip_prefix("Socket errors:") {
            w.errors += v
                .split(',')
                .filter_map(|p| p.split_whitespace().last()?.parse::<u64>().ok())
                .sum::<u64>();
        }
    }
    Ok(w)
}

/// Run `ofa bench serve`.
pub fn run(a: Args) -> anyhow::Result<()> {
    if Command::new("wrk").arg("--version").output().is_err() {
        bail!("`wrk` is not installed: `apt-get install wrk` (or `make bench`, which installs it)");
    }
    anyhow::ensure!(
        a.cold > 0 && a.seconds > 0 && a.rss_seconds > 0,
        "counts and durations must be positive"
    );
    let exe = std::env::current_exe().context("cannot find the ofa binary")?;
    let mut child = Command::new(exe)
        .args(["serve", "--addr", "127.0.0.1:0", "--package"])
        .arg(&a.package)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start `ofa serve`")?;
    let stdout = child.stdout.take().context("no stdout")?;
    let child = KillOnDrop(child);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    let Some(base) = line
        .trim()
        .strip_prefix("listening on ")
        .map(str::to_string)
    else {
        bail!(
            "`ofa serve` did not start on {} (see `ofa serve --package …`)",
            a.package.display()
        );
    };
    let pid = child.0.id();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(120)))
        .build()
        .into();
    let get_json = |path: &str| -> anyhow::Result<Value> {
        let mut r = agent.get(format!("{base}{path}")).call()?;
        anyhow::ensure!(r.status() == 200, "GET {path}: {}", r.status());
        Ok(serde_json::from_str(&r.body_mut().read_to_string()?)?)
    };
    let list = get_json("/v1/supernets")?;
    let info = &list["supernets"][0];
    let name = info["name"]
        .as_str()
        .context("no supernet served")?
        .to_string();
    let hw = &info["hardware"][0];
    let hardware = hw["name"]
        .as_str()
        .context("the package has no latency table")?
        .to_string();
    let (lo, hi) = (
        hw["latency_ms"]["min"].as_f64().unwrap_or(0.0),
        hw["latency_ms"]["max"].as_f64().unwrap_or(0.0),
    );
    let body = |i: usize| {
        let f = 0.3 + 0.65 * i as f64 / a.cold as f64;
        json!({"supernet": name, "hardware": hardware,
               "constraints": {"latency_ms": lo + f * (hi - lo)}, "seed": i})
        .to_string()
    };
    let post = |b: &str| -> anyhow::Result<(f64, Value)> {
        let t = Instant::now();
        let mut r = agent
            .post(format!("{base}/v1/subnets"))
            .header("content-type", "application/json")
            .send(b)?;
        let ms = t.elapsed().as_secs_f64() * 1e3;
        let text = r.body_mut().read_to_string()?;
        anyhow::ensure!(r.status() == 200, "POST /v1/subnets: {} {text}", r.status());
        Ok((ms, serde_json::from_str(&text)?))
    };
    // cold searches, one at a time, then each result's first download
    let mut cold = Vec::new();
    let mut ids = Vec::new();
    for i in 0..a.cold {
        let (ms, rec) = post(&body(i))?;
        cold.push(ms);
        let id = rec["id"].as_str().ok_or_else(|| {
            anyhow::anyhow!("POST /v1/subnets answered a record without `id`: {rec}")
        })?;
        ids.push(id.to_string());
    }
    ids.dedup();
    let mut first = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for id in ids.iter().filter(|i| seen.insert(i.to_string())) {
        let t = Instant::now();
        let mut r = agent
            .get(format!("{base}/v1/subnets/{id}/weights"))
            .call()?;
        let n = r
            .body_mut()
            .with_config()
            .limit(1 << 30)
            .read_to_vec()?
            .len();
        first.push(t.elapsed().as_secs_f64() * 1e3);
        anyhow::ensure!(r.status() == 200 && n > 0, "GET weights: {}", r.status());
    }
    let id = &ids[0];
    let get_url = format!("{base}/v1/subnets/{id}");
    // warm-up, then the throughput runs
    wrk(&get_url, a.connections, 2, None)?;
    let g = wrk(&get_url, a.connections, a.seconds, None)?;
    let script = tempfile::Builder::new().suffix(".lua").tempfile()?;
    std::fs::write(
        script.path(),
        format!(
            "wrk.method = \"POST\"\nwrk.headers[\"Content-Type\"] = \"application/json\"\nwrk.body = '{}'\n",
            body(0)
        ),
    )?;
    let p = wrk(
        &format!("{base}/v1/subnets"),
        a.connections,
        a.seconds,
        Some(script.path()),
    )?;
    // sustained load; RSS once a second
    let rss_before = rss_mib(pid).unwrap_or(f64::NAN);
    let (tx, rx) = std::sync::mpsc::channel();
    let (url, conns, secs) = (get_url.clone(), a.connections, a.rss_seconds);
    let load = std::thread::spawn(move || {
        let r = wrk(&url, conns, secs, None);
        let _ = tx.send(());
        r
    });
    let mut samples = Vec::new();
    while rx.recv_timeout(Duration::from_secs(1)).is_err() {
        samples.extend(rss_mib(pid));
    }
    let sustained = load
        .join()
        .map_err(|_| anyhow::anyhow!("the load thread panicked"))??;
    let (r0, r1) = (
        samples.first().copied().unwrap_or(rss_before),
        samples.last().copied().unwrap_or(rss_before),
    );
    let growth = (r1 - r0) / r0 * 100.0;
    let cold_s = Summary::of(cold);
    let first_s = Summary::of(first);
    let out = ServeReport {
        package: a.package.display().to_string(),
        connections: a.connections,
        cached_get_rps: g.rps,
        cached_get_p99_ms: g.p99_ms,
        cached_get_errors: g.errors,
        cached_post_rps: p.rps,
        cached_post_p99_ms: p.p99_ms,
        cached_post_errors: p.errors,
        cold_post_p50_ms: cold_s.median_ms,
        cold_post: cold_s,
        first_weights_p50_ms: first_s.median_ms,
        first_weights: first_s,
        rss_growth_pct: growth,
        rss_mib: Rss {
            start: r0,
            end: r1,
            samples: samples.len(),
            max: samples.iter().copied().fold(f64::NAN, f64::max),
        },
        sustained_get_rps: sustained.rps,
        sustained_get_errors: sustained.errors,
    };
    if a.json {
        super::bench::print_json(BenchReport::Serve(out));
        return Ok(());
    }
    outln!(
        "serving {} ({} connections, wrk on loopback, sharing the machine's cores)",
        a.package.display(),
        a.connections
    );
    outln!(
        "{:<34} {:>12} {:>12} {:>8}",
        "",
        "req/s",
        "p99 ms",
        "errors"
    );
    outln!(
        "{:<34} {:>12.0} {:>12.2} {:>8}",
        "cached GET /v1/subnets/{id}",
        g.rps,
        g.p99_ms,
        g.errors
    );
    outln!(
        "{:<34} {:>12.0} {:>12.2} {:>8}",
        "cached POST /v1/subnets",
        p.rps,
        p.p99_ms,
        p.errors
    );
    outln!(
        "{:<34} {:>12} {:>12.1}",
        "cold POST (search), p50 ms",
        "",
        cold_s.median_ms
    );
    outln!(
        "{:<34} {:>12} {:>12.1}",
        "first weights (cut + BN), p50 ms",
        "",
        first_s.median_ms
    );
    outln!(
        "RSS over {} s of cached GETs: {:.1} → {:.1} MiB ({:+.2} %)",
        a.rss_seconds,
        r0,
        r1,
        growth
    );
    Ok(())
}
