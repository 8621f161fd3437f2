//! Placement: the constraint filters, then a score per feasible worker,
//! then the highest score (ties go to the smallest worker id, so the order
//! of the candidates never changes the choice).
//!
//! * least-loaded (the default): lowest CPU load plus memory use.
//! * binpack: the fullest worker that still fits (memory after placing).
//! * spread: fewest running containers.

use crate::{filter, Placement, Request, Verdict, Worker};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    LeastLoaded,
    Binpack,
    Spread,
}

impl Strategy {
    pub fn name(self) -> &'static str {
        match self {
            Self::LeastLoaded => "least-loaded",
            Self::Binpack => "binpack",
            Self::Spread => "spread",
        }
    }

    /// The score of a worker that passed the filters; higher is better.
    pub fn score(self, req: &Request, w: &Worker) -> i64 {
        match self {
            Self::LeastLoaded => {
                2000 - i64::from(w.cpu_load_permille.min(1000)) - used_permille(w, 0)
            }
            Self::Binpack => used_permille(w, req.memory_bytes),
            Self::Spread => -i64::from(w.containers_running),
        }
    }
}

/// Memory in use on `w` (plus `extra` bytes) per mille of its total.
fn used_permille(w: &Worker, extra: u64) -> i64 {
    if w.memory_total == 0 {
        return 1000;
    }
    let used = w.memory_total.saturating_sub(w.memory_free);
    // In 64 bits when it fits (below 18 PB): wasm has no 128-bit division,
    // and the software one was a good share of a placement's instructions.
    // (`checked_mul` would itself be a 128-bit multiply there.)
    let permille = match used.checked_add(extra) {
        Some(sum) if sum <= u64::MAX / 1000 => u128::from(sum * 1000 / w.memory_total),
        _ => (u128::from(used) + u128::from(extra)) * 1000 / u128::from(w.memory_total),
    };
    i64::try_from(permille.min(1000)).unwrap_or(1000)
}

/// Decide where `req` runs among `workers`.
pub fn place(req: &Request, workers: &[Worker], strategy: Strategy) -> Placement {
    place_each(req, workers.iter().cloned(), strategy)
}

/// [`place`] over workers made one at a time (a guest builds each from
/// its arguments as it goes, instead of a second list of them).
pub fn place_each<'a>(
    req: &Request,
    workers: impl IntoIterator<Item = Worker<'a>>,
    strategy: Strategy,
) -> Placement {
    let workers = workers.into_iter();
    let mut verdicts = Vec::with_capacity(workers.size_hint().0);
    // The best so far: its index, score and id (ties go to the smallest id).
    let mut best: Option<(usize, i64, &'a str)> = None;
    let mut feasible = 0usize;
    for (i, w) in workers.enumerate() {
        let verdict = match filter::reject(req, &w) {
            Some(reason) => Verdict {
                feasible: false,
                reason,
                score: 0,
            },
            None => {
                feasible += 1;
                let score = strategy.score(req, &w);
                let better = match best {
                    None => true,
                    Some((_, s, id)) => score > s || (score == s && w.id < id),
                };
                if better {
                    best = Some((i, score, w.id));
                }
                Verdict {
                    feasible: true,
                    reason: String::new(),
                    score,
                }
            }
        };
        verdicts.push(verdict);
    }
    let (chosen, reason) = match best {
        Some((i, score, id)) => (
            u32::try_from(i).ok(),
            format!(
                "{}: {id} has the best score {score} of {feasible} feasible among {} candidates",
                strategy.name(),
                verdicts.len()
            ),
        ),
        None => (
            None,
            format!(
                "{}: no worker fits among {} candidates",
                strategy.name(),
                verdicts.len()
            ),
        ),
    };
    Placement {
        verdicts,
        chosen,
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture::{request, worker};

    fn pool() -> Vec<Worker<'static>> {
        let mut a = worker("a");
        a.cpu_load_permille = 900;
        a.memory_free = 2 << 30;
        a.containers_running = 1;
        let mut b = worker("b");
        b.cpu_load_permille = 100;
        b.memory_free = 12 << 30;
        b.containers_running = 9;
        let mut c = worker("c");
        c.online = false;
        vec![a, b, c]
    }

    #[test]
    fn strategies_choose_differently() {
        let req = request("t");
        let ll = place(&req, &pool(), Strategy::LeastLoaded);
        assert_eq!(ll.chosen, Some(1), "{}", ll.reason);
        assert!(!ll.verdicts[2].feasible);
        assert_eq!(ll.verdicts[2].reason, "offline");
        assert_eq!(place(&req, &pool(), Strategy::Binpack).chosen, Some(0));
        assert_eq!(place(&req, &pool(), Strategy::Spread).chosen, Some(0));
    }

    #[test]
    fn ties_go_to_the_smallest_id_whatever_the_order() {
        let req = request("t");
        let mut ws = vec![worker("z"), worker("m"), worker("q")];
        assert_eq!(place(&req, &ws, Strategy::LeastLoaded).chosen, Some(1));
        ws.reverse();
        assert_eq!(place(&req, &ws, Strategy::LeastLoaded).chosen, Some(1));
    }

    #[test]
    fn nothing_fits() {
        let mut req = request("t");
        req.platform = Some("windows".into());
        let p = place(&req, &pool(), Strategy::Spread);
        assert_eq!(p.chosen, None);
        assert_eq!(p.verdicts.len(), 3);
        assert!(p.reason.contains("no worker fits"), "{}", p.reason);
        assert!(p
            .verdicts
            .iter()
            .all(|v| !v.feasible && !v.reason.is_empty()));
    }

    #[test]
    fn memory_use_is_exact_at_any_size() {
        let mut w = worker("w");
        for (total, free, extra, want) in [
            (16 << 30, 8 << 30, 0, 500),
            (3, 2, 0, 333),
            (u64::MAX, 0, 0, 1000),
            (u64::MAX, u64::MAX / 3, 0, 666),
            (u64::MAX / 2, u64::MAX / 4, u64::MAX, 1000),
            (1 << 60, 1 << 59, 1 << 58, 750),
            (0, 0, 0, 1000),
        ] {
            w.memory_total = total;
            w.memory_free = free;
            assert_eq!(used_permille(&w, extra), want, "{total} {free} {extra}");
        }
    }

    #[test]
    fn empty_pool() {
        let p = place(&request("t"), &[], Strategy::LeastLoaded);
        assert_eq!(p.chosen, None);
        assert!(p.verdicts.is_empty());
    }
}
