//! What the `stacklab-vmm` process prints: one JSON [`Line`] per line.

use serde::{Deserialize, Serialize};

use stacklab_api::ErrorCode;

use crate::report::{VmEvent, VmReport};
use crate::GuestView;

/// The `--mode` flag that asks the tiny guest for that line.
pub use stacklab_abi::mode::XRAY_LINE;
/// The tiny guest's x-ray line in its console (see `stacklab_abi`).
pub use stacklab_abi::XRAY_LINE_PREFIX;

/// One line of `stacklab-vmm`'s standard output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Line {
    /// A step, as it happens.
    Event(VmEvent),
    /// The run reached ready and powered off.
    Done {
        /// Everything measured (boxed: far larger than the other lines).
        report: Box<VmReport>,
        /// The VMM process's resident set at the end, in bytes (`None`:
        /// unreadable).
        #[serde(default)]
        vmm_rss_bytes: Option<u64>,
        /// Its proportional set size, in bytes.
        #[serde(default)]
        vmm_pss_bytes: Option<u64>,
        /// For a Linux guest: what its `/init` reported.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        guest: Option<GuestView>,
    },
    /// The run failed.
    Error {
        /// [`crate::VmError::code`], or `usage`.
        code: ErrorCode,
        /// What happened, for a learner.
        message: String,
    },
}
