//! Failover of a held fleet: kill -9 the first replica (a third of the
//! fleet's agents) and time how long until every agent whose socket it
//! closed has registered again on a survivor. The simulated agents
//! reconnect as the real agent does after a connection that stayed up (1 s
//! ±20 %, doubling on failure; `fleet`), each to another replica picked at
//! random. "Registered" is the fleet's own count of `worker.accepted`
//! answers (its children report the time of the latest, in Unix
//! milliseconds, comparable with the time of the kill); the survivors'
//! `crops_workers_connected` are read afterwards as a cross-check.

use std::time::{Duration, Instant};

use crate::client::{cpu_secs, Certs};
use crate::fleet::unix_ms;
use crate::hold::{metric, scrape, Held};
use crate::topology::Deployment;

/// The goal for 10,000 agents.
const GOAL: Duration = Duration::from_secs(30);
/// The reasons of `crops_connections_shed_total`.
const SHED: [&str; 3] = ["per_source", "total", "first_request"];
/// How long the bench waits before it reports an incomplete failover.
const GIVE_UP: Duration = Duration::from_secs(120);

/// Kill replica 0 and report how its agents moved.
pub async fn failover(dep: &mut Deployment, held: &Held, certs: &Certs, admin: &str) {
    let victim = 0;
    let names = dep.names();
    let survivors: Vec<usize> = (0..dep.addrs.len()).filter(|&i| i != victim).collect();
    let before = held.herd.counts();
    let on_victim = before.connected.get(victim).copied().unwrap_or(0).max(0) as u64;
    let held_before: i64 = before.connected.iter().sum();
    let cpu0: Vec<f64> = survivors
        .iter()
        .map(|&i| dep.pid(i).map_or(0.0, cpu_secs))
        .collect();
    let commits0 = dep.pg_commits();
    println!(
        "\n### Failover: kill -9 of {} holding {on_victim} of {} agents\n",
        names[victim], held.agents
    );

    let killed_ms = unix_ms();
    let t = Instant::now();
    dep.kill(victim);
    // Done once the survivors hold every agent that was connected.
    let mut after = held.herd.counts();
    let done = loop {
        let on_survivors: i64 = survivors
            .iter()
            .map(|&i| after.connected.get(i).copied().unwrap_or(0))
            .sum();
        if on_survivors >= held_before && after.reconnected > before.reconnected {
            break true;
        }
        if t.elapsed() > GIVE_UP {
            break false;
        }
        smol::Timer::after(Duration::from_millis(100)).await;
        after = held.herd.counts();
    };
    let took = Duration::from_millis(after.last_register_ms.saturating_sub(killed_ms));
    let cpu: Vec<f64> = survivors
        .iter()
        .zip(&cpu0)
        .map(|(&i, c)| dep.pid(i).map_or(0.0, cpu_secs) - c)
        .collect();
    let commits = dep
        .pg_commits()
        .zip(commits0)
        .map(|(a, b)| a.saturating_sub(b));
    let mut on_each = Vec::new();
    let mut conflicts = (0u64, 0u64);
    let mut shed = [0u64; 3];
    for &i in &survivors {
        let text = scrape(dep, i, certs, admin).await;
        let series =
            |outcome| format!("crops_store_write_conflicts_total{{outcome=\"{outcome}\"}}");
        let count = |outcome| metric(&text, &series(outcome)).parse::<u64>().unwrap_or(0);
        conflicts.0 += count("retried");
        conflicts.1 += count("gave_up");
        for (n, reason) in shed.iter_mut().zip(SHED) {
            let series = format!("crops_connections_shed_total{{reason=\"{reason}\"}}");
            *n += metric(&text, &series).parse::<u64>().unwrap_or(0);
        }
        let fleet = after.connected.get(i).copied().unwrap_or(0);
        on_each.push(format!(
            "{} {fleet} / {}",
            names[i],
            metric(&text, "crops_workers_connected")
        ));
    }
    let survivor_names: Vec<&str> = survivors.iter().map(|&i| names[i].as_str()).collect();

    println!("| measurement | value |");
    println!("|---|---|");
    println!(
        "| connections the kill closed / registered again on {} | {} / {} |",
        survivor_names.join(", "),
        after.dropped - before.dropped,
        after.reconnected - before.reconnected
    );
    if done {
        println!(
            "| **time from kill -9 until all {on_victim} are registered on the others** | **{:.1} s** (goal: within {} s) |",
            took.as_secs_f64(),
            GOAL.as_secs()
        );
    } else {
        println!(
            "| time from kill -9 until all {on_victim} are registered on the others | not within {} s: {} of {on_victim} |",
            GIVE_UP.as_secs(),
            after.reconnected - before.reconnected
        );
    }
    println!(
        "| reconnect attempts that failed before one registered | {} |",
        after.retries - before.retries
    );
    println!(
        "| agents per survivor after (the fleet's count / `crops_workers_connected`) | {} |",
        on_each.join(", ")
    );
    let cpu: Vec<String> = survivors
        .iter()
        .zip(&cpu)
        .map(|(&i, c)| format!("{} {c:.1} s", names[i]))
        .collect();
    println!(
        "| survivors' CPU from the kill until the last registration | {} |",
        cpu.join(", ")
    );
    if let Some(commits) = commits {
        println!("| PostgreSQL transactions committed in that time | {commits} |");
    }
    println!(
        "| survivors' unauthenticated connections shed, by reason (since start) | {} |",
        SHED.iter()
            .zip(shed)
            .map(|(reason, n)| format!("{reason} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "| survivors' writes that lost a conflict and ran again alone / gave up (since start) | {} / {} |",
        conflicts.0, conflicts.1
    );
    let new: Vec<&String> = after
        .reasons
        .iter()
        .filter(|r| !before.reasons.contains(r))
        .collect();
    if !new.is_empty() {
        println!("\nhow the kill's connections ended (distinct): {new:?}");
    }
}
