//! Workshop mode on the wire: classes, joining one, the instructor's view
//! of the room, and the capacity a server reports.
//!
//! Display names travel only to the instructor (who holds the token); what
//! a learner sees of the room is anonymous points, their own marked.

use serde::{Deserialize, Serialize};

use crate::{DemoId, Quantity, RunState};

/// `POST /api/classes` body (instructor token required).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateClass {
    /// Shown to the instructor and on the join page, 1 to 80 characters.
    #[cfg_attr(
        feature = "openapi",
        schema(
            min_length = 1,
            max_length = 80,
            pattern = r"^[^\x00-\x1F\x7F-\x9F]*[^\s\x00-\x1F\x7F-\x9F][^\x00-\x1F\x7F-\x9F]*$"
        )
    )]
    pub name: String,
    /// How long learners may join, in seconds (default 4 hours, at most 7
    /// days).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = 60, maximum = 604800))]
    pub expires_in_secs: Option<u64>,
    /// The room's size: how many learners may join (default
    /// [`DEFAULT_MAX_MEMBERS`], at most [`MAX_MAX_MEMBERS`]). The next one
    /// is refused with `class_full`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 500))]
    pub max_members: Option<u32>,
}

/// Default lifetime of a class.
pub const DEFAULT_CLASS_SECS: u64 = 4 * 3600;
/// Longest lifetime of a class.
pub const MAX_CLASS_SECS: u64 = 7 * 24 * 3600;

/// Learners a class takes unless its instructor says otherwise: a large
/// workshop room.
pub const DEFAULT_MAX_MEMBERS: u32 = 100;
/// The most a class may take: beyond a few hundred, one server's slots
/// could not give each learner a turn within a queue's timeout anyway.
pub const MAX_MAX_MEMBERS: u32 = 500;

/// A class: its code, name, lifetime and size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Class {
    /// The short join code, e.g. `K7QM2P` (see [`valid_class_code`]).
    pub code: String,
    /// Its name.
    pub name: String,
    /// When it was created (Unix time, ms).
    pub created_at_ms: i64,
    /// When joining stops (Unix time, ms). Runs stay in the history after.
    pub expires_at_ms: i64,
    /// The page a learner opens to join: `/join/{code}`.
    pub join_path: String,
    /// How many learners may join.
    pub max_members: u32,
}

/// Letters of a class code: no 0/O, 1/I/L, so a code read off a projector
/// is typed right.
pub const CLASS_CODE_ALPHABET: &[u8] = b"23456789ABCDEFGHJKMNPQRSTUVWXYZ";
/// Length of a class code.
pub const CLASS_CODE_LEN: usize = 6;

/// Whether `s` could be a class code (the alphabet, the length; lower case
/// accepted and read as upper case by the server).
pub fn valid_class_code(s: &str) -> bool {
    s.len() == CLASS_CODE_LEN
        && s.bytes()
            .all(|b| CLASS_CODE_ALPHABET.contains(&b.to_ascii_uppercase()))
}

/// `POST /api/classes/{code}/join` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct JoinClass {
    /// The browser's learner id (see [`crate::valid_learner`]).
    #[cfg_attr(feature = "openapi", schema(pattern = r"^[A-Za-z0-9_-]{8,64}$"))]
    pub learner: String,
    /// What the instructor sees, up to 40 characters; optional.
    #[cfg_attr(
        feature = "openapi",
        schema(max_length = 40, pattern = r"^[^\x00-\x1F\x7F-\x9F]*$")
    )]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
}

/// One learner of a class, as the instructor sees them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Member {
    /// Their learner id.
    pub learner: String,
    /// Their display name, if they gave one.
    pub display_name: Option<String>,
    /// When they joined (Unix time, ms).
    pub joined_at_ms: i64,
    /// Runs they started in this class.
    pub runs: u32,
    /// The demos they have waiting or running right now.
    pub active: Vec<DemoId>,
    /// What they read, answered and predicted in this class.
    #[serde(default)]
    pub learning: MemberLearning,
}

/// A member's learning in a class, as their browser reported it: lessons
/// opened, quiz questions answered (only the first answer of each counts)
/// and guesses sent with their runs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MemberLearning {
    /// The lessons they opened (slugs), in course order.
    pub lessons_read: Vec<String>,
    /// Questions answered.
    pub answered: u32,
    /// Of those, answered right the first time.
    pub first_try_right: u32,
    /// Guesses sent with their runs (one per quantity and run).
    pub guesses: u32,
    /// Of those, "I'd rather not guess".
    pub declined: u32,
}

/// `DELETE /api/classes/{code}/members/{learner}` (instructor token
/// required): who was removed and how many of their runs were ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RemovedMember {
    /// Their learner id.
    pub learner: String,
    /// Their waiting and running runs in this class that were ended
    /// (`removed_from_class`).
    pub runs_ended: u32,
}

/// One finished run of the room.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RoomPoint {
    /// Which demo.
    pub demo: DemoId,
    /// The run.
    pub run: String,
    /// Whose (instructor view only; `None` in a learner's view).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub learner: Option<String>,
    /// Succeeded or failed.
    pub state: RunState,
    /// Its headline time (µs), see [`DemoId::headline_keys`].
    pub time_to_ready_us: Option<f64>,
    /// How long it waited in line first (µs): not part of the headline.
    #[serde(default)]
    pub queue_wait_us: Option<f64>,
    /// Its headline memory (bytes).
    pub memory_bytes: Option<f64>,
    /// Other runs in progress on the host when it left the queue.
    pub others_at_start: Option<u32>,
    /// Whether it is the asking learner's own run (a learner's view).
    #[serde(default)]
    pub mine: bool,
}

/// `GET /api/classes/{code}` (instructor token required): the room now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ClassView {
    /// The class.
    pub class: Class,
    /// Whether joining has closed.
    pub expired: bool,
    /// Who has joined, in joining order.
    pub members: Vec<Member>,
    /// Every finished run of the class, oldest first.
    pub points: Vec<RoomPoint>,
    /// The server's queues now.
    pub capacity: Vec<Capacity>,
    /// What the room's figures are, per demo, from the figure table.
    #[serde(default)]
    pub figures: Vec<DemoFigures>,
    /// The course's lessons, in order (what "send the room to lesson N"
    /// and the members' progress refer to).
    #[serde(default)]
    pub lessons: Vec<LessonRef>,
    /// The lesson the instructor sent the room to, if any.
    #[serde(default)]
    pub lesson: Option<String>,
    /// Every guess sent with a run of the class, oldest first, beside what
    /// that run measured.
    #[serde(default)]
    pub guesses: Vec<RoomGuess>,
}

/// A lesson of the course, as the room refers to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LessonRef {
    /// Its slug (`/lessons/{slug}`).
    pub slug: String,
    /// Its title.
    pub title: String,
    /// How many quiz questions it has.
    pub questions: u32,
}

/// A guess of the room, for the instructor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RoomGuess {
    /// The demo.
    pub demo: DemoId,
    /// Of what.
    pub quantity: Quantity,
    /// The run it was sent with.
    pub run: String,
    /// Whose.
    pub learner: String,
    /// The guess (µs or bytes); absent: "I'd rather not guess".
    pub value: Option<f64>,
    /// What that run measured (its headline figure), once it finished.
    pub measured: Option<f64>,
    /// Why `measured` is absent: the run has not finished, it failed, or
    /// its reading is missing (the reason the run's record gives).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub missing: Option<String>,
}

/// `POST /api/classes/{code}/learning` body: what a member's browser
/// reports as the learner goes (nothing else of theirs is sent).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct LearningReport {
    /// The member's learner id.
    #[cfg_attr(feature = "openapi", schema(pattern = r"^[A-Za-z0-9_-]{8,64}$"))]
    pub learner: String,
    /// The lesson (its slug).
    #[cfg_attr(feature = "openapi", schema(pattern = r"^[a-z0-9-]{1,64}$"))]
    pub lesson: String,
    /// A quiz answer: the question's number in the lesson and the index of
    /// the choice as the lesson lists it (not as it was shown). Absent: the
    /// lesson was opened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<QuizAnswer>,
}

/// One answer to a quiz question.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct QuizAnswer {
    /// The question's number (1-based).
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 100))]
    pub question: u32,
    /// The choice (0-based, in the lesson's order).
    #[cfg_attr(feature = "openapi", schema(maximum = 100))]
    pub choice: u32,
}

/// What the server kept of a [`LearningReport`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LearningKept {
    /// Whether it counted: false for a question answered before (the
    /// first answer is the one scored) or a lesson already read.
    pub counted: bool,
    /// For an answer: whether it is right.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub right: Option<bool>,
}

/// `POST /api/classes/{code}/lesson` body (instructor): send the room to
/// a lesson.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RoomLesson {
    /// The lesson's slug.
    #[cfg_attr(feature = "openapi", schema(pattern = r"^[a-z0-9-]{1,64}$"))]
    pub lesson: String,
}

/// `GET /api/classes/{code}/now?learner=…`: the room as a learner's page
/// needs it (no names): where the instructor sent it, and whether this
/// learner is in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RoomNow {
    /// The class's code.
    pub code: String,
    /// Its name.
    pub name: String,
    /// Whether joining has closed.
    pub expired: bool,
    /// The lesson the instructor sent the room to, if any.
    pub lesson: Option<String>,
    /// Whether the asking learner is a member (joined, not removed).
    pub member: bool,
}

/// A demo's headline figures, named and explained as the figure table
/// does (`GET /api/figures`, and the room view): what clients show beside
/// the numbers, so the browser needs no copy of the table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DemoFigures {
    /// Which demo.
    pub demo: DemoId,
    /// Its headline time.
    pub time: FigureText,
    /// Its wait in line.
    pub waited: FigureText,
    /// The platform's share of its time (a single instance only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<FigureText>,
    /// Its headline memory.
    pub memory: FigureText,
}

/// A figure's label and explanation.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FigureText {
    /// Short human name.
    pub label: String,
    /// What it measures and how.
    pub how: String,
}

impl DemoFigures {
    /// `demo`'s, from the figure table.
    pub fn of(demo: DemoId) -> DemoFigures {
        use crate::figures::{figure, headline, Figure, Question};
        let text = |f: Figure| FigureText {
            label: f.label.into_owned(),
            how: f.how.into_owned(),
        };
        DemoFigures {
            demo,
            time: text(headline(demo, Question::Time)),
            waited: text(
                figure(demo, crate::Metric::QueueWait.into()).expect("every demo waits in line"),
            ),
            platform: figure(demo, crate::Metric::PlatformShare.into()).map(text),
            memory: text(headline(demo, Question::Memory)),
        }
    }
}

/// `GET /api/classes/{code}/points?learner=…`: the room's finished runs,
/// anonymous, the learner's own marked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RoomPoints {
    /// Oldest first.
    pub points: Vec<RoomPoint>,
}

/// One queue of the server: how many runs at once, how many now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Capacity {
    /// The demos that share it.
    pub demos: Vec<DemoId>,
    /// Runs at once.
    pub slots: u32,
    /// Slots taken now.
    pub in_use: u32,
    /// Runs waiting now.
    pub queued: u32,
    /// Runs that may wait at once; the next is refused (`queue_full`).
    pub max_waiting: u32,
    /// Median time a recent run held its slot (ms; `None` before the first).
    pub recent_median_ms: Option<u64>,
    /// Why this many slots (from the host's CPUs and memory, or a flag).
    pub sized_by: String,
}

/// What a class's event stream (`GET /api/classes/{code}/events`) says:
/// something changed; fetch the view again. It carries no names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RoomChange {
    /// The run that changed.
    pub run: String,
    /// Its demo.
    pub demo: DemoId,
    /// Where it is now.
    pub state: RunState,
}
