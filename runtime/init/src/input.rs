//! The ACPI power button. The kernel's ACPI button driver reports it as an input device
//! (`KEY_POWER` on /dev/input/eventN, with the `button` and `evdev` modules); nothing in the
//! kernel acts on it, so PID 1 reads it and shuts down cleanly. Reading the event device
//! directly keeps this inside eci-init's own loop: no acpid, no scripts, no extra process.

/// `KEY_POWER` from linux/input-event-codes.h.
pub const KEY_POWER: u16 = 116;
const EV_KEY: u16 = 1;
/// `struct input_event` on 64-bit Linux: a 16-byte timeval, type, code, value.
pub const EVENT_SIZE: usize = 24;

/// Whether an input device's `capabilities/key` bitmap (hex words, most significant first,
/// each one `unsigned long` wide) has `code`.
pub fn has_key(bitmap: &str, code: u16) -> bool {
    let words: Vec<&str> = bitmap.split_whitespace().collect();
    let bits = usize::BITS as usize;
    let word_index = code as usize / bits;
    if word_index >= words.len() {
        return false;
    }
    let word = words[words.len() - 1 - word_index];
    u64::from_str_radix(word, 16).is_ok_and(|w| w >> (code as usize % bits) & 1 == 1)
}

/// Whether a buffer of input events holds a power-key press.
pub fn power_pressed(events: &[u8]) -> bool {
    events.chunks_exact(EVENT_SIZE).any(|e| {
        let kind = u16::from_ne_bytes([e[16], e[17]]);
        let code = u16::from_ne_bytes([e[18], e[19]]);
        let value = i32::from_ne_bytes([e[20], e[21], e[22], e[23]]);
        kind == EV_KEY && code == KEY_POWER && value == 1
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_acpi_power_button_bitmap_has_key_power() {
        // What /sys/class/input/event0/device/capabilities/key reads for QEMU's ACPI button.
        assert!(has_key("10000000000000 0", KEY_POWER));
        // A keyboard without a power key, and a short bitmap.
        assert!(!has_key("ffffffffffffffff fffffffffffffffe", 200));
        assert!(!has_key("0", KEY_POWER));
        assert!(has_key("1 0 0", 128));
    }

    #[test]
    fn only_a_power_press_counts() {
        let ev = |kind: u16, code: u16, value: i32| {
            let mut e = vec![0u8; 16];
            e.extend_from_slice(&kind.to_ne_bytes());
            e.extend_from_slice(&code.to_ne_bytes());
            e.extend_from_slice(&value.to_ne_bytes());
            e
        };
        let mut buf = ev(EV_KEY, KEY_POWER, 0);
        buf.extend(ev(0, 0, 0));
        assert!(!power_pressed(&buf), "a release alone");
        buf.extend(ev(EV_KEY, KEY_POWER, 1));
        assert!(power_pressed(&buf));
        assert!(!power_pressed(&ev(EV_KEY, 30, 1)));
    }
}
