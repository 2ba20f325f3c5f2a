//! `candle_pool::shorten_idle_spin` in a process of its own (it sets an environment variable,
//! which tests sharing a process must not race on).

use smollm3_model::candle_pool::{shorten_idle_spin, IDLE_SPIN};

const VAR: &str = "CANDLE_BARRIER_POOL_SPIN_LIMIT";

#[test]
fn sets_the_spin_limit_unless_the_user_did() {
    std::env::remove_var(VAR);
    shorten_idle_spin();
    assert_eq!(std::env::var(VAR).unwrap(), IDLE_SPIN.to_string());
    // A value the user chose stays.
    std::env::set_var(VAR, "25000");
    shorten_idle_spin();
    assert_eq!(std::env::var(VAR).unwrap(), "25000");
}
