//! Resume: a reconnecting client's `Last-Event-ID` turned into what it
//! missed, per followed subject, within what one connect may cost.
//!
//! - [`replay`]: the plan (what this node holds, what history must give)
//!   and the replay a session sends before its live events.
//! - [`recent`]: a subject's last events, kept for streams resuming just behind.
//! - [`sharing`]: one history read shared by the streams resuming a
//!   subject from one place.
//! - [`tails`]: a history stream's tail, read once for many resumes.
//! - [`reads`]: single reads of a subject's history.
//! - [`starts`]: where a stream starts on subjects its id holds no position for.
//! - [`budget`]: what one connect may replay.

pub(crate) mod budget;
pub(crate) mod reads;
pub(crate) mod recent;
pub(crate) mod replay;
pub(crate) mod sharing;
pub(crate) mod starts;
pub(crate) mod tails;
