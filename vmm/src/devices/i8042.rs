//! The least of an i8042 keyboard controller a Linux guest needs: enough for
//! the kernel's driver to find a controller (so it does not wait out its
//! time-outs), and the "pulse reset line" command (0xFE on port 0x64) that
//! `reboot=k` uses to end the machine. Like Firecracker's, it has no
//! keyboard behind it.

/// Data port.
pub const DATA_PORT: u16 = 0x60;
/// Command (write) / status (read) port.
pub const COMMAND_PORT: u16 = 0x64;

const CMD_READ_CTR: u8 = 0x20;
const CMD_WRITE_CTR: u8 = 0x60;
const CMD_SELF_TEST: u8 = 0xaa;
const CMD_KBD_TEST: u8 = 0xab;
const CMD_AUX_TEST: u8 = 0xa9;
const CMD_RESET: u8 = 0xfe;
/// Status: output buffer full (a byte waits on the data port).
const STATUS_OBF: u8 = 0x01;
/// Status: system flag (set after a successful self-test).
const STATUS_SYS: u8 = 0x04;
/// Answer to the self-test command.
const SELF_TEST_OK: u8 = 0x55;
/// A keyboard's "acknowledge".
const ACK: u8 = 0xfa;

/// What a port write asked of the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// Nothing beyond the controller's own state.
    None,
    /// The guest pulsed the CPU reset line: the machine resets (we stop it).
    Reset,
}

/// The controller's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct I8042 {
    ctr: u8,
    out: Option<u8>,
    expect_ctr: bool,
}

impl Default for I8042 {
    fn default() -> Self {
        I8042 {
            // Keyboard interrupt on, system flag, translation: what firmware leaves.
            ctr: 0x45,
            out: None,
            expect_ctr: false,
        }
    }
}

impl I8042 {
    /// A read of `port` (0x60 or 0x64).
    pub fn read(&mut self, port: u16) -> u8 {
        match port {
            COMMAND_PORT => STATUS_SYS | if self.out.is_some() { STATUS_OBF } else { 0 },
            _ => self.out.take().unwrap_or(0),
        }
    }

    /// A write of `value` to `port` (0x60 or 0x64).
    pub fn write(&mut self, port: u16, value: u8) -> Effect {
        if port == COMMAND_PORT {
            self.expect_ctr = false;
            match value {
                CMD_READ_CTR => self.out = Some(self.ctr),
                CMD_WRITE_CTR => self.expect_ctr = true,
                CMD_SELF_TEST => self.out = Some(SELF_TEST_OK),
                CMD_KBD_TEST | CMD_AUX_TEST => self.out = Some(0),
                CMD_RESET => return Effect::Reset,
                _ => {}
            }
        } else if std::mem::take(&mut self.expect_ctr) {
            self.ctr = value;
        } else {
            // A command for the (absent) keyboard: acknowledge it.
            self.out = Some(ACK);
        }
        Effect::None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_control_register_reads_back_what_was_written() {
        let mut c = I8042::default();
        assert_eq!(c.read(COMMAND_PORT) & STATUS_OBF, 0, "nothing waiting");
        c.write(COMMAND_PORT, CMD_READ_CTR);
        assert_eq!(c.read(COMMAND_PORT) & STATUS_OBF, STATUS_OBF);
        assert_eq!(c.read(DATA_PORT), 0x45);
        assert_eq!(c.read(COMMAND_PORT) & STATUS_OBF, 0, "the byte was taken");
        c.write(COMMAND_PORT, CMD_WRITE_CTR);
        c.write(DATA_PORT, 0x30);
        c.write(COMMAND_PORT, CMD_READ_CTR);
        assert_eq!(c.read(DATA_PORT), 0x30);
    }

    #[test]
    fn self_test_passes_and_keyboard_commands_are_acknowledged() {
        let mut c = I8042::default();
        c.write(COMMAND_PORT, CMD_SELF_TEST);
        assert_eq!(c.read(DATA_PORT), SELF_TEST_OK);
        assert_eq!(c.write(DATA_PORT, 0xf2), Effect::None);
        assert_eq!(c.read(DATA_PORT), ACK);
    }

    #[test]
    fn pulsing_the_reset_line_resets_the_machine() {
        let mut c = I8042::default();
        // The kernel's kb_wait() first waits for "input buffer empty".
        assert_eq!(c.read(COMMAND_PORT) & 0x02, 0);
        assert_eq!(c.write(COMMAND_PORT, CMD_RESET), Effect::Reset);
    }
}
