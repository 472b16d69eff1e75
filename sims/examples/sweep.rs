//! Runs a range of seeds and prints a summary with the speed: what docs/sims.md quotes.
//!
//! `cargo run --release -p idem-sim --example sweep -- [FIRST..END] [SCENARIO] [VARIANT] [THREADS]`
//! (default `0..100 default correct 1`). Set `IDEM_SIM_TRACE=SEED` to print one seed's trace.

#![allow(clippy::print_stdout)]

use std::time::Instant;

use idem_sim::{Scenario, Variant};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let range = args.first().map_or("0..100", String::as_str);
    let (first, end) = range.split_once("..").expect("seeds as FIRST..END");
    let seeds = first.parse::<u64>().expect("a number")..end.parse::<u64>().expect("a number");
    let scenario: Scenario = args.get(1).map_or(Ok(Scenario::Default), |name| name.parse()).expect("a scenario");
    let variant: Variant = args.get(2).map_or(Ok(Variant::Correct), |name| name.parse()).expect("a variant");
    let threads: usize = args.get(3).map_or(1, |n| n.parse().expect("a number"));
    if let Ok(seed) = std::env::var("IDEM_SIM_TRACE") {
        let report = idem_sim::run(seed.parse().expect("a seed"), scenario, variant);
        print!("{}", report.trace);
        print!("{report}");
        return;
    }
    // Wall-clock time measures the simulator's speed only; nothing simulated reads it.
    let started = Instant::now();
    let sweep = idem_sim::sweep(seeds, scenario, variant, threads, &|report| {
        if !report.passed() {
            print!("{report}");
        }
    });
    let wall = started.elapsed().as_secs_f64();
    println!(
        "{} runs of {scenario}/{variant}, {} failed {:?}, {:.0} simulated s in {wall:.1} wall s: {:.1} seeds/s on {threads} thread(s), {:.0} simulated s per wall s",
        sweep.runs,
        sweep.failures.len(),
        sweep.failing_seeds(),
        sweep.simulated.as_secs_f64(),
        sweep.runs as f64 / wall,
        sweep.simulated.as_secs_f64() / wall
    );
    for (name, count) in sweep.coverage.iter() {
        println!("  {name:32} {count}");
    }
}
