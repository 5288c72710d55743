//! The bounded label sets. Every metric with a label is an array indexed by
//! one of these enums, so a label value can never come from the network and
//! every series exists (at zero) from the first scrape.

macro_rules! label_enum {
    ($(#[$m:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($variant),+ }

        impl $name {
            /// Every value, in index order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            /// How many values there are.
            pub const COUNT: usize = Self::ALL.len();
            /// The label value as exported.
            pub const fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
            /// Position in [`Self::ALL`].
            pub const fn index(self) -> usize {
                self as usize
            }
        }
    };
}

label_enum!(
    /// What kind of request a core handled (never the raw path).
    Route {
        Pixel => "pixel",
        Collect => "collect",
        Stealth => "stealth",
        PublicKey => "public_key",
        HmacJs => "hmac_js",
        Health => "healthz",
        Ready => "readyz",
        Preflight => "preflight",
        Script => "script",
        Proxy => "proxy",
        Rejected => "rejected",
        Corrupt => "corrupt",
        Checkpoint => "checkpoint",
    }
);

label_enum!(
    /// HTTP status class.
    StatusClass {
        Informational => "1xx",
        Success => "2xx",
        Redirect => "3xx",
        ClientError => "4xx",
        ServerError => "5xx",
    }
);

impl StatusClass {
    /// The class of a status code (anything out of range counts as 5xx).
    pub fn of(status: u16) -> StatusClass {
        match status {
            100..=199 => StatusClass::Informational,
            200..=299 => StatusClass::Success,
            300..=399 => StatusClass::Redirect,
            400..=499 => StatusClass::ClientError,
            _ => StatusClass::ServerError,
        }
    }
}

label_enum!(
    /// Where an event came from (the event's `source` field).
    EventSource {
        Pixel => "pixel",
        Collect => "collect",
        Stealth => "stealth",
        Test => "test",
        Server => "server",
    }
);

label_enum!(
    /// Why an event was not queued.
    DropReason {
        QueueFull => "queue_full",
        ShuttingDown => "shutting_down",
        JournalFull => "journal_full",
        JournalFailed => "journal_failed",
    }
);

label_enum!(
    /// Why a signed request was refused.
    AuthFailure {
        Missing => "missing",
        Malformed => "malformed",
        Expired => "expired",
        NotYetValid => "not_yet_valid",
        BadSignature => "bad_signature",
    }
);

label_enum!(
    /// tg1 token kinds handed out.
    TokenKind {
        Page => "p",
        Fetched => "f",
    }
);

label_enum!(
    /// What became of an HTML response that injection looked at
    /// (`inject_total{result}`): injected, or why not.
    InjectResult {
        Injected => "injected",
        NotGet => "not_get",
        Status => "status",
        NotHtml => "not_html",
        ContentRange => "content_range",
        Attachment => "attachment",
        NoTransform => "no_transform",
        NotDocument => "not_document",
        StackedEncoding => "stacked_encoding",
        UnsupportedEncoding => "unsupported_encoding",
        NoDocumentMarkup => "no_document_markup",
        CspMetaNoNonce => "csp_meta_no_nonce",
        CspMetaNonceConflict => "csp_meta_nonce_conflict",
        CspHashWouldBlockStyles => "csp_hash_would_block_styles",
        CspBadTrackerHash => "csp_bad_tracker_hash",
        TooLarge => "too_large",
        RatioExceeded => "ratio_exceeded",
        Corrupt => "corrupt",
        Budget => "budget",
        EncodeError => "encode_error",
        CspScriptNone => "csp_script_none",
        HeadTooLong => "head_too_long",
        Aborted => "aborted",
        AlreadyInjected => "already_injected",
    }
);

label_enum!(
    /// What went wrong talking to the origin.
    UpstreamError {
        Dns => "dns",
        Connect => "connect",
        Timeout => "timeout",
        Closed => "closed",
        BadResponse => "bad_response",
        Io => "io",
    }
);

label_enum!(
    /// The sinks.
    Sink {
        Log => "log",
        Kafka => "kafka",
        Postgres => "postgres",
    }
);

label_enum!(
    /// How a sink failed.
    SinkFailure {
        Open => "open",
        Write => "write",
        Fsync => "fsync",
        Rotate => "rotate",
        Connect => "connect",
        Rejected => "rejected",
        Corrupt => "corrupt",
        Checkpoint => "checkpoint",
    }
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_follow_declaration_order() {
        for (i, r) in Route::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
        }
        assert_eq!(StatusClass::of(101), StatusClass::Informational);
        assert_eq!(StatusClass::of(204), StatusClass::Success);
        assert_eq!(StatusClass::of(304), StatusClass::Redirect);
        assert_eq!(StatusClass::of(431), StatusClass::ClientError);
        assert_eq!(StatusClass::of(504), StatusClass::ServerError);
        assert_eq!(StatusClass::of(999), StatusClass::ServerError);
    }
}
