//! Error codes: the `error` of every API error body and the `code` of a
//! failed run. Each travels as the string beside it, so clients match on
//! these values and the wire never carries a code nobody declared.

use crate::wire_enum::wire_enum;

wire_enum! {
    /// A stable, machine-readable reason for a failure.
    pub enum ErrorCode {
        // --- the HTTP API ---
        /// No such route or resource.
        NotFound => "not_found",
        /// The route exists, not for this method.
        MethodNotAllowed => "method_not_allowed",
        /// The body is larger than the API reads.
        BodyTooLarge => "body_too_large",
        /// The body is not JSON.
        UnsupportedMediaType => "unsupported_media_type",
        /// Well-formed, but a field's value is not acceptable.
        InvalidRequest => "invalid_request",
        /// The request could not be read at all.
        MalformedRequest => "malformed_request",
        /// The server failed (its history database).
        Internal => "internal",
        /// The server did not answer in time; 503.
        RequestTimeout => "request_timeout",
        /// The run history's database did not answer within its bounds (a
        /// statement past its timeout, or no free connection in time);
        /// 503 with `Retry-After`.
        StoreBusy => "store_busy",
        // --- a demo cannot run on this server now ---
        /// The Docker engine does not answer.
        DockerUnavailable => "docker_unavailable",
        /// The PostgreSQL image is not present.
        ImageMissing => "image_missing",
        /// `/dev/kvm` is missing or refused.
        KvmUnavailable => "kvm_unavailable",
        /// The VMM or the guest image is not built.
        VmmMissing => "vmm_missing",
        /// KVM here cannot boot a Linux kernel.
        LinuxGuestUnsupported => "linux_guest_unsupported",
        /// The Linux guest's kernel or archive is not built.
        LinuxGuestMissing => "linux_guest_missing",
        /// The learner already has as many runs of this demo as one may
        /// (one running, one waiting); 429 with `Retry-After`.
        TooManyRuns => "too_many_runs",
        /// This client sent more run requests than a learner would; 429
        /// with `Retry-After`.
        RateLimited => "rate_limited",
        /// A density sweep (several demos at once, holding every slot)
        /// asked for too often from this address outside a class; 429
        /// with `Retry-After`.
        DensityLimited => "density_limited",
        /// A density sweep asked for by a learner in a class: there the
        /// instructor runs it once for the whole room; 403.
        DensityForInstructor => "density_for_instructor",
        /// The route is the instructor's and the request had no (or a
        /// wrong) instructor token; 401.
        InstructorTokenRequired => "instructor_token_required",
        /// The class no longer takes learners; 410.
        ClassExpired => "class_expired",
        /// The learner has not joined the class the request names; 403.
        NotAMember => "not_a_member",
        /// The class has as many members as its instructor allowed
        /// (`max_members`); 409.
        ClassFull => "class_full",
        /// The instructor removed this learner from the class: a join or a
        /// run request in it is refused (403), and their waiting and
        /// running runs ended with this code.
        RemovedFromClass => "removed_from_class",
        /// The demo's queue has as many runs waiting as it holds; 503 with
        /// `Retry-After`.
        QueueFull => "queue_full",
        /// The request's `Host` is not a name this lab serves (DNS
        /// rebinding protection); 403.
        HostNotAllowed => "host_not_allowed",
        /// The request came from a page of another site, not one named
        /// with `--embed-origin`; 403.
        OriginNotAllowed => "origin_not_allowed",
        /// The app's pages are not built on this server; 503.
        FrontendMissing => "frontend_missing",
        // --- a run that failed ---
        /// No slot came free within the queue's timeout.
        QueueTimeout => "queue_timeout",
        /// The run's deadline passed.
        Deadline => "deadline",
        /// The client went away or the server is shutting down.
        Cancelled => "cancelled",
        /// The server stopped (or crashed) while the run was in progress.
        ServerStopped => "server_stopped",
        /// The replica running it stopped heart-beating; another replica
        /// closed the run.
        HostLost => "host_lost",
        /// The kernel's OOM killer stopped the container.
        OomKilled => "oom_killed",
        /// The container exited before it was ready.
        Exited => "exited",
        /// The Docker engine refused a step.
        Docker => "docker",
        /// The VMM process could not be started.
        Vmm => "vmm",
        /// The VMM process ended without a result.
        VmmCrashed => "vmm_crashed",
        /// The VMM printed something unreadable.
        VmmProtocol => "vmm_protocol",
        /// The VMM was started with bad arguments.
        Usage => "usage",
        /// The VMM could not enter its jail (namespaces, empty root,
        /// unprivileged user).
        Jail => "jail",
        /// The jailed VMM made a system call its seccomp filter forbids,
        /// and was stopped.
        SyscallForbidden => "syscall_forbidden",
        /// KVM refused an ioctl.
        Kvm => "kvm",
        /// Guest memory outside the limits.
        MemoryLimit => "memory_limit",
        /// Guest memory could not be set up.
        Memory => "memory",
        /// The guest image could not be loaded.
        Load => "load",
        /// The guest triple-faulted.
        TripleFault => "triple_fault",
        /// KVM could not emulate a guest instruction.
        InternalError => "internal_error",
        /// The guest used an I/O port no device owns.
        UnknownIo => "unknown_io",
        /// The guest used MMIO no device owns.
        UnknownMmio => "unknown_mmio",
        /// The guest wrote too much to its console.
        ConsoleFlood => "console_flood",
        /// The guest reported an exception.
        GuestException => "guest_exception",
        /// The guest stopped before it was ready.
        StoppedEarly => "stopped_early",
        /// Any other VM exit.
        UnexpectedExit => "unexpected_exit",
    }
}
