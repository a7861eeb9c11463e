//! Replay: a recording's frames fed through the same [`Router`] as a live capture, so the
//! actors see exactly what they saw live. Needs no kernel and no loader.
use crate::frame::Tag;
use crate::recording::{RecordingError, RecordingReader};
use crate::Router;

/// Feeds a recording through `router`, frame by frame, as the live capture routed them.
/// Frames only recorded (kernel counters) go to `on_frame`.
pub fn run_replay(
    reader: &mut RecordingReader,
    router: &mut Router,
    mut on_frame: impl FnMut(Tag, &[u8]),
) -> Result<(), RecordingError> {
    while let Some((tag, body)) = reader.next_frame_ref()? {
        match tag {
            Tag::KernelEvent => router.event(body)?,
            Tag::Identity => router.identity(body)?,
            Tag::Watermark => {
                let ts = u64::from_le_bytes(
                    body.get(..8)
                        .and_then(|b| b.try_into().ok())
                        .unwrap_or([0; 8]),
                );
                router.watermark(ts)?;
            }
            Tag::KernelCounters => on_frame(tag, body),
        }
    }
    router.watermark(u64::MAX)?;
    Ok(())
}
