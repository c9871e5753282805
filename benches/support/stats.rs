//! Figures the benches share: medians, CPU time from `getrusage`, and the
//! share of the machine's CPU time that other processes used (on a 2-vCPU
//! machine anything above a few percent disturbs a measurement).

/// The median of `values` (NaN if there are none).
pub fn median(values: impl IntoIterator<Item = f64>) -> f64 {
    let mut sorted: Vec<f64> = values.into_iter().collect();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// The smallest and largest of `values`.
pub fn range(values: impl IntoIterator<Item = f64>) -> (f64, f64) {
    values
        .into_iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        })
}

/// `getrusage(who)`.
pub fn rusage(who: libc::c_int) -> libc::rusage {
    // SAFETY: getrusage fills the struct.
    unsafe {
        let mut usage = std::mem::zeroed::<libc::rusage>();
        libc::getrusage(who, &mut usage);
        usage
    }
}

pub fn timeval_ns(t: libc::timeval) -> f64 {
    t.tv_sec as f64 * 1e9 + t.tv_usec as f64 * 1e3
}

/// User plus system CPU time of a `getrusage` result, in ns.
pub fn cpu_ns(usage: &libc::rusage) -> f64 {
    timeval_ns(usage.ru_utime) + timeval_ns(usage.ru_stime)
}

/// The machine's busy and total CPU time (/proc/stat), and this process's
/// and its ended children's (`getrusage`), all in ns.
pub struct Machine {
    busy_ns: f64,
    total_ns: f64,
    ours_ns: f64,
}

impl Machine {
    pub fn now() -> Machine {
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let ticks: Vec<f64> = stat
            .lines()
            .next()
            .unwrap_or("")
            .split_whitespace()
            .skip(1)
            .filter_map(|t| t.parse().ok())
            .collect();
        // user nice system idle iowait irq softirq steal
        let idle = ticks.get(3).unwrap_or(&0.0) + ticks.get(4).unwrap_or(&0.0);
        let total: f64 = ticks.iter().take(8).sum();
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        Machine {
            busy_ns: (total - idle) * 1e9 / hz,
            total_ns: total * 1e9 / hz,
            ours_ns: cpu_ns(&rusage(libc::RUSAGE_SELF)) + cpu_ns(&rusage(libc::RUSAGE_CHILDREN)),
        }
    }

    /// Shares of all CPU time since `self` used by this process, its ended
    /// children and `extra_ns` (a child still running), and by every other
    /// process.
    pub fn shares_since(&self, extra_ns: f64) -> (f64, f64) {
        let later = Machine::now();
        let total = (later.total_ns - self.total_ns).max(1.0);
        let busy = later.busy_ns - self.busy_ns;
        let ours = later.ours_ns - self.ours_ns + extra_ns;
        (ours / total, ((busy - ours) / total).max(0.0))
    }
}
