//! The engine's request path against a simple model, on op sequences from a
//! seeded pseudo-random generator, on both kinds: the check the fuzz target
//! `engine_ops` runs, here in plain `cargo test`.

#[path = "model/engine_model.rs"]
mod engine_model;

#[path = "model/xorshift.rs"]
mod xorshift;

use engine_model::{Config, Op, run};

fn ops(rng: &mut xorshift::XorShift, n: usize) -> Vec<Op> {
    (0..n)
        .map(|_| match rng.below(12) {
            0..=6 => Op::Call {
                id: rng.below(8) as u8,
                cached: rng.below(4) != 0,
                key: rng.below(8) as u8,
                value: rng.below(1000) as u16,
                fail: rng.below(6) == 0,
            },
            7 => Op::BadId,
            8 | 9 => Op::Advance(rng.below(30) as u8),
            10 => Op::Sweep,
            _ => match rng.below(2) {
                0 => Op::Remove(rng.below(8) as u8),
                _ => Op::Invalidate,
            },
        })
        .collect()
}

#[test]
fn both_engines_agree_with_the_model() {
    let mut rng = xorshift::XorShift::new(0x00e2_617e);
    for round in 0..60 {
        let config = Config {
            locked: round % 2 == 1,
            idle_ms: rng.below(60) as u8,
            ttl_ms: rng.below(60) as u8,
        };
        let ops = ops(&mut rng, 150);
        run(&config, &ops);
    }
}
