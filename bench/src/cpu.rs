//! CPU time of processes, read from `/proc/<pid>/stat` (user + system), so CPU per delivered
//! event can be printed: figures that hold on a shared machine, unlike throughput alone.

use std::collections::BTreeMap;
use std::time::Duration;

/// Clock ticks a second of `/proc/<pid>/stat` times (`getconf CLK_TCK`; 100 on Linux).
fn ticks_per_second() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .filter(|t| *t > 0)
        .unwrap_or(100)
}

/// User + system CPU time of one process so far, or `None` when it is gone.
pub fn process_cpu(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces: fields are counted after its ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the name.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(Duration::from_secs_f64(
        (utime + stime) as f64 / ticks_per_second() as f64,
    ))
}

/// CPU times of a set of processes at one moment.
#[derive(Debug, Clone, Default)]
pub struct Snapshot(BTreeMap<u32, Duration>);

impl Snapshot {
    /// Reads each pid (those gone are left out).
    pub fn take(pids: &[u32]) -> Self {
        Self(
            pids.iter()
                .filter_map(|p| process_cpu(*p).map(|c| (*p, c)))
                .collect(),
        )
    }

    /// CPU spent between `before` and this snapshot by the processes of this one (a process
    /// new since `before` counts from zero).
    pub fn since(&self, before: &Snapshot) -> Duration {
        self.0
            .iter()
            .map(|(pid, now)| now.saturating_sub(before.0.get(pid).copied().unwrap_or_default()))
            .sum()
    }
}

/// Microseconds of CPU per event.
pub fn per_event_us(cpu: Duration, events: u64) -> Option<f64> {
    (events > 0).then(|| cpu.as_secs_f64() * 1e6 / events as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_its_own_cpu() {
        let me = std::process::id();
        let before = Snapshot::take(&[me]);
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_add(i * i);
        }
        assert!(x > 0);
        let after = Snapshot::take(&[me]);
        assert!(process_cpu(me).is_some());
        assert!(after.since(&before) <= Duration::from_secs(60));
        assert_eq!(per_event_us(Duration::from_millis(1), 10), Some(100.0));
        assert_eq!(per_event_us(Duration::from_millis(1), 0), None);
    }
}
