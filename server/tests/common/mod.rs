//! Helpers shared by the server's integration tests.

use stacklab_api::RunEvent;

/// The events of a complete Server-Sent Events body, in order.
pub fn parse_sse(body: &[u8]) -> Vec<RunEvent> {
    String::from_utf8_lossy(body)
        .split("\n\n")
        .filter_map(|block| block.lines().find_map(|l| l.strip_prefix("data: ")))
        .map(|data| serde_json::from_str(data).unwrap())
        .collect()
}
