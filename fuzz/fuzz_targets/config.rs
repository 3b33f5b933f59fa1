//! The config loader on arbitrary TOML text: an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(cfg) = relay::config::load_str(text, "fuzz") {
        let _ = cfg.db_path();
        let _ = relay::config::units::parse_size(text);
        let _ = relay::config::units::parse_duration(text);
    }
    let _ = relay::config::units::parse_size(text);
    if let Ok(d) = relay::config::units::parse_duration(text) {
        let _ = relay::config::units::format_duration(d);
    }
});
