//! P(alive) and expected purchases against an independent implementation:
//! the `lifetimes` Python package (its values are in
//! tests/fixtures/lifetimes/reference.csv, made by
//! scripts/lifetimes_reference.py; see the fixture's README).

use churnwatch::risk::bgnbd::{expected_purchases, p_alive, ModelKind, ModelParams, Rfm};

fn close(ours: f64, theirs: f64, rel: f64) -> bool {
    (ours - theirs).abs() <= rel * theirs.abs().max(1e-300)
}

#[test]
fn p_alive_and_expected_purchases_match_the_lifetimes_package() {
    let csv = include_str!("fixtures/lifetimes/reference.csv");
    let mut rows = 0;
    for line in csv.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        let num = |i: usize| f[i].parse::<f64>().unwrap();
        let kind = ModelKind::parse(f[0]).unwrap();
        let params = ModelParams {
            r: num(1),
            alpha: num(2),
            a: num(3),
            b: num(4),
        };
        let rfm = Rfm::new(num(5), num(6), num(7));
        let (alive, horizon, expected) = (num(8), num(9), num(10));
        let ours = p_alive(kind, &params, &rfm);
        assert!(
            close(ours, alive, 1e-9),
            "{line}: p_alive ours {ours:e} lifetimes {alive:e}"
        );
        let ours = expected_purchases(kind, &params, &rfm, horizon);
        assert!(
            close(ours, expected, 1e-7),
            "{line}: expected purchases ours {ours:e} lifetimes {expected:e}"
        );
        rows += 1;
    }
    assert_eq!(rows, 40);
}
