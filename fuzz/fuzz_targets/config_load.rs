//! `Config::parse` on arbitrary text, then `validate`. A config that
//! validates must hold what the rest of the code relies on, give an engine
//! config, and survive a TOML round trip.
#![no_main]

use churnwatch::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let cfg = match Config::parse(text) {
        Ok(cfg) => cfg,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    if let Err(e) = cfg.validate() {
        let _ = e.to_string();
        return;
    }
    let c = &cfg.detect.checkin_lapse;
    assert!((1..=127).contains(&c.habit_window_days));
    assert!(c.recent_days >= 1 && c.baseline_days >= 1);
    assert!(c.recent_days as u64 + c.baseline_days as u64 <= 127);
    assert!(!cfg.kafka.input_topics.is_empty());
    assert!(cfg.input.max_event_bytes >= 64);
    assert!(cfg.time.future_skew_ms >= 0);
    let engine = cfg.engine();
    assert!(engine.evict_after_ms.is_none_or(|ms| ms >= 0));
    let _ = cfg.changelog_topic();

    // What validates prints back to a file that loads to the same config.
    let printed = toml::to_string(&cfg).expect("a config prints as toml");
    let again = Config::parse(&printed).expect("a printed config parses");
    assert_eq!(format!("{again:?}"), format!("{cfg:?}"));
    again.validate().expect("a printed config validates");
});
