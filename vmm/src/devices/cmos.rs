//! A CMOS real-time clock (MC146818) with the host's time, read-only: the
//! kernel reads it once at boot to set its wall clock. Without it, every
//! read floats to 0xff, which reads as "update in progress", and the kernel
//! polls the clock thousands of times (each a VM exit) before giving up.

/// Index port (bit 7 masks NMIs; ignored here).
pub const INDEX_PORT: u16 = 0x70;
/// Data port.
pub const DATA_PORT: u16 = 0x71;

/// The clock's state: which register the index port selected.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Cmos {
    index: u8,
}

/// A calendar date and time (UTC) from Unix seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Civil {
    /// e.g. 2026.
    pub year: i64,
    /// 1 to 12.
    pub month: u32,
    /// 1 to 31.
    pub day: u32,
    /// 0 to 23.
    pub hour: u32,
    /// 0 to 59.
    pub minute: u32,
    /// 0 to 59.
    pub second: u32,
    /// 1 (Sunday) to 7, as the RTC counts.
    pub weekday: u32,
}

impl Civil {
    /// The UTC date and time `secs` after 1970-01-01 (Howard Hinnant's
    /// days-to-civil algorithm).
    pub fn from_unix(secs: i64) -> Civil {
        let days = secs.div_euclid(86_400);
        let rem = secs.rem_euclid(86_400);
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        Civil {
            year: yoe + era * 400 + i64::from(month <= 2),
            month,
            day,
            hour: (rem / 3600) as u32,
            minute: (rem / 60 % 60) as u32,
            second: (rem % 60) as u32,
            // 1970-01-01 was a Thursday (5 in 1 = Sunday counting).
            weekday: ((days + 4).rem_euclid(7) + 1) as u32,
        }
    }
}

fn bcd(v: u32) -> u8 {
    (((v / 10) << 4) | (v % 10)) as u8
}

impl Cmos {
    /// A write to [`INDEX_PORT`] or [`DATA_PORT`] (data writes are ignored:
    /// the guest cannot set the host's clock).
    pub fn write(&mut self, port: u16, value: u8) {
        if port == INDEX_PORT {
            self.index = value & 0x7f;
        }
    }

    /// A read of [`DATA_PORT`] at Unix time `now_secs` (the index port
    /// reads back 0xff, like real hardware).
    pub fn read(&self, port: u16, now_secs: i64) -> u8 {
        if port != DATA_PORT {
            return 0xff;
        }
        let t = Civil::from_unix(now_secs);
        match self.index {
            0x00 => bcd(t.second),
            0x02 => bcd(t.minute),
            0x04 => bcd(t.hour),
            0x06 => bcd(t.weekday),
            0x07 => bcd(t.day),
            0x08 => bcd(t.month),
            0x09 => bcd((t.year % 100) as u32),
            0x32 => bcd((t.year / 100) as u32),
            0x0a => 0x26, // status A: 32.768 kHz, 1024 Hz, no update in progress
            0x0b => 0x02, // status B: 24-hour mode, BCD
            0x0d => 0x80, // status D: battery good, time valid
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates_match_known_instants() {
        let t = Civil::from_unix(0);
        assert_eq!((t.year, t.month, t.day, t.weekday), (1970, 1, 1, 5));
        let t = Civil::from_unix(951_782_400); // 2000-02-29, a Tuesday
        assert_eq!((t.year, t.month, t.day, t.weekday), (2000, 2, 29, 3));
        let t = Civil::from_unix(1_795_790_096); // 2026-11-27 14:34:56 UTC, a Friday
        assert_eq!(
            (t.year, t.month, t.day, t.hour, t.minute, t.second, t.weekday),
            (2026, 11, 27, 14, 34, 56, 6)
        );
    }

    #[test]
    fn the_clock_reads_in_bcd_and_never_says_update_in_progress() {
        let mut c = Cmos::default();
        let now = 1_795_790_096;
        let read = |c: &mut Cmos, reg: u8| {
            c.write(INDEX_PORT, reg | 0x80); // with NMIs masked, as Linux does
            c.read(DATA_PORT, now)
        };
        assert_eq!(read(&mut c, 0x0a) & 0x80, 0, "UIP clear");
        assert_eq!(read(&mut c, 0x00), 0x56);
        assert_eq!(read(&mut c, 0x02), 0x34);
        assert_eq!(read(&mut c, 0x04), 0x14);
        assert_eq!(read(&mut c, 0x07), 0x27);
        assert_eq!(read(&mut c, 0x08), 0x11);
        assert_eq!(read(&mut c, 0x09), 0x26);
        assert_eq!(read(&mut c, 0x32), 0x20);
        c.write(DATA_PORT, 0x99);
        assert_eq!(read(&mut c, 0x09), 0x26, "the guest cannot set the clock");
    }
}
