//! The session registry and the TTL cache against a simple model, on op
//! sequences from a seeded pseudo-random generator: the check the fuzz
//! targets `session_ops` and `cache_ops` run, here in plain `cargo test`.

#[path = "model/ttl_model.rs"]
mod ttl_model;

#[path = "model/xorshift.rs"]
mod xorshift;

use ttl_model::{Config, Op, run};

fn ops(rng: &mut xorshift::XorShift, n: usize) -> Vec<Op> {
    (0..n)
        .map(|_| {
            let k = rng.below(12) as u8;
            let v = rng.below(1000) as u16;
            match rng.below(10) {
                0 | 1 => Op::Get(k),
                2 if rng.below(2) == 0 => Op::GetOrInitAsync(k, v),
                2 if rng.below(2) == 0 => Op::CancelledInit(k, v),
                2 | 3 => Op::GetOrInit(k, v),
                4 => Op::GetOrFail(k),
                5 => Op::Insert(k, v),
                6 => Op::InsertTtl(k, v, rng.below(50) as u16),
                7 => Op::Remove(k),
                8 => Op::Advance(rng.below(40) as u16),
                _ if rng.below(10) == 0 => Op::Clear,
                _ => Op::Sweep,
            }
        })
        .collect()
}

#[test]
fn registry_and_cache_agree_with_the_model() {
    let mut rng = xorshift::XorShift::new(0x5e55_10e5);
    for round in 0..400 {
        let config = Config {
            session: round % 2 == 0,
            cap: rng.below(16) as u8,
            ttl_ms: if rng.below(3) == 0 {
                0
            } else {
                rng.below(100) as u16
            },
            idle_ms: if rng.below(3) == 0 {
                0
            } else {
                rng.below(60) as u16
            },
            evict: rng.below(2) == 0,
        };
        let ops = ops(&mut rng, 300);
        run(&config, &ops);
    }
}
