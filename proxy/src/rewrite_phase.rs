//! What a request does in its server, as nginx's rewrite and find-config phases decide
//! it: the server's `if`s and `rewrite`s in order, then its `return`; the location for
//! the (possibly rewritten) URI, nginx's slash redirect, the location's `rewrite`s
//! (which may search the locations again), then the location's `return` or
//! `proxy_pass`. The URI a rewrite makes becomes the request's `$uri` and `$args` (in
//! [`LogCtx`]); `$request_uri` stays as received.

use hsmgate_config::nginx::{
    Action, Condition, LocationBlock, LocationStep, MAX_URI_CHANGES, Matcher, ProxyPass,
    ProxySettings, Return, Rewrite, RewriteFlag, Rewritten, Server, ServerStep, SetVar,
    location_match,
};
use http::HeaderMap;

use crate::reqlog::LogCtx;

/// What answers the request.
pub(crate) enum ActionRef<'a> {
    /// `proxy_pass`.
    Proxy(&'a ProxyPass),
    /// `return`.
    Return(&'a Return),
    /// nginx's 301 from `/prefix` to `/prefix/` for a `proxy_pass` location `/prefix/`.
    AddSlash,
    /// A `rewrite`'s redirect: the status and the target (a path not yet absolute).
    Redirect(u16, String),
    /// The URI changed more than [`MAX_URI_CHANGES`] times: 500.
    Cycle,
    /// `stub_status`.
    StubStatus,
}

impl<'a> From<&'a Action> for ActionRef<'a> {
    fn from(a: &'a Action) -> Self {
        match a {
            Action::ProxyPass(p) => ActionRef::Proxy(p),
            Action::Return(r) => ActionRef::Return(r),
            Action::StubStatus => ActionRef::StubStatus,
        }
    }
}

/// How a rewrite changed the URI that `proxy_pass` sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UriChange {
    /// Not changed: the request URI as received (or with the location's prefix replaced).
    None,
    /// Changed by a server's `rewrite` or before a location search: the new URI, with
    /// the location's prefix replaced by `proxy_pass`'s URI part if it has one.
    Changed,
    /// Changed by a `rewrite … break` in the serving location: the whole new URI, as
    /// nginx sends it whatever `proxy_pass`'s URI part.
    Break,
}

/// The outcome: the settings that apply, the action (none: 404), the location (none
/// when the server answered, or no location matched), and how the URI changed.
pub(crate) struct Routed<'s> {
    pub(crate) settings: &'s ProxySettings,
    pub(crate) action: Option<ActionRef<'s>>,
    pub(crate) location: Option<&'s LocationBlock>,
    pub(crate) uri_change: UriChange,
}

/// Run the phases for a request whose normalised path is `log.uri`; rewrites update
/// `log.uri` and `log.args`. `internal`: the request was sent here by an `error_page`
/// (an `internal` location answers it; a client's own request only after a rewrite).
pub(crate) fn route<'s>(
    server: &'s Server,
    log: &mut LogCtx,
    headers: &HeaderMap,
    internal: bool,
) -> Routed<'s> {
    let mut changes = 0;
    let at_server = |action| Routed {
        settings: &server.settings,
        action: Some(action),
        location: None,
        uri_change: UriChange::None,
    };
    let stopped = match server_steps(&server.server_steps, log, headers, &mut changes) {
        ServerRan::Answer(action) => return at_server(action),
        ServerRan::Stopped => true,
        ServerRan::Done => false,
    };
    if !stopped && let Some(r) = &server.server_return {
        return at_server(ActionRef::Return(r));
    }
    loop {
        let uri_change = match changes {
            0 => UriChange::None,
            _ => UriChange::Changed,
        };
        // `limit_except`: a method it does not list gets its settings (nginx switches
        // to that implicit location when it finds the location).
        let found = |l: &'s LocationBlock, method: &str, action| Routed {
            settings: l.settings.for_method(method),
            action,
            location: Some(l),
            uri_change,
        };
        if let Some(l) = auto_slash(&server.locations, &log.uri) {
            return found(l, log.method.as_str(), Some(ActionRef::AddSlash));
        }
        let Some(l) = location_match(&server.locations, &log.uri) else {
            return Routed {
                settings: &server.settings,
                action: None,
                location: None,
                uri_change,
            };
        };
        // A regex location's captures are `$1`… for what follows.
        if let Matcher::Regex { regex, .. } = &l.matcher
            && let Some(caps) = regex.captures(&log.uri)
        {
            set_captures(log, caps);
        }
        if l.internal && !internal && changes == 0 {
            // nginx's find-config phase: an `internal` location is not the client's.
            return found(l, log.method.as_str(), None);
        }
        // A method `limit_except` does not list: nginx's implicit location serves it,
        // which has the `proxy_pass` but none of the rewrite module's directives (no
        // `return`, `rewrite`, `set` or `if` runs).
        if let Some(except) = &l.settings.limit_except
            && !except.allows(log.method.as_str())
        {
            return Routed {
                settings: &except.settings,
                action: l.pass.as_ref().map(ActionRef::Proxy),
                location: Some(l),
                uri_change,
            };
        }
        // A matching `if` block's settings and `proxy_pass` serve the request.
        let mut run = LocationRun {
            location: l,
            settings: &l.settings,
            pass: l.pass.as_ref(),
            changes: &mut changes,
            search_again: false,
            uri_change,
        };
        match run.steps(&l.steps, log, headers) {
            Ran::Answer(routed) => return routed,
            Ran::Last => continue,
            Ran::Done if run.search_again => continue,
            Ran::Done => {
                let action = match &l.action {
                    Some(Action::Return(r)) => Some(ActionRef::Return(r)),
                    Some(Action::StubStatus) => Some(ActionRef::StubStatus),
                    // The location's, or a matching `if` block's.
                    _ => run.pass.map(ActionRef::Proxy),
                };
                return run.at(action, uri_change);
            }
        }
    }
}

/// What running a server's rewrite-module directives came to.
enum ServerRan<'s> {
    /// All ran (the URI may have changed).
    Done,
    /// A `rewrite … last` or `break`: the server's other directives are skipped.
    Stopped,
    /// An answer (a `return`, a redirect).
    Answer(ActionRef<'s>),
}

/// Run a server's (or a matching server `if` block's) `set`, `rewrite` and `if` in
/// order; `changes` counts the URI's changes.
fn server_steps<'s>(
    steps: &'s [ServerStep],
    log: &mut LogCtx,
    headers: &HeaderMap,
    changes: &mut usize,
) -> ServerRan<'s> {
    for step in steps {
        match step {
            ServerStep::If(i) => {
                if !holds(&i.condition, log, headers) {
                    continue;
                }
                match server_steps(&i.steps, log, headers, changes) {
                    ServerRan::Done => {}
                    other => return other,
                }
                if let Some(ret) = &i.ret {
                    return ServerRan::Answer(ActionRef::Return(ret));
                }
            }
            ServerStep::Set(v) => set(v, log, headers),
            ServerStep::Break => return ServerRan::Stopped,
            ServerStep::Rewrite(r) => match rewrite(r, log, headers) {
                None => {}
                Some(Rewritten::Redirect { code, url }) => {
                    return ServerRan::Answer(ActionRef::Redirect(code, url));
                }
                Some(Rewritten::Uri { .. }) => {
                    *changes += 1;
                    if matches!(r.flag, RewriteFlag::Last | RewriteFlag::Break) {
                        return ServerRan::Stopped;
                    }
                }
            },
        }
    }
    ServerRan::Done
}

/// What running a location's rewrite-module directives came to.
enum Ran<'s> {
    /// All ran; the URI may have changed (no flag).
    Done,
    /// A `rewrite … last`: search the locations again.
    Last,
    /// An answer (a `return`, a redirect, `break`'s content, a cycle).
    Answer(Routed<'s>),
}

/// The state of one location's directives while they run.
struct LocationRun<'s, 'c> {
    location: &'s LocationBlock,
    /// The settings in force: the location's, or the last matching `if` block's.
    settings: &'s ProxySettings,
    pass: Option<&'s ProxyPass>,
    changes: &'c mut usize,
    search_again: bool,
    uri_change: UriChange,
}

impl<'s> LocationRun<'s, '_> {
    fn at(&self, action: Option<ActionRef<'s>>, uri_change: UriChange) -> Routed<'s> {
        Routed {
            settings: self.settings,
            action,
            location: Some(self.location),
            uri_change,
        }
    }

    /// Run `steps` in order (a matching `if` block's where the block is).
    fn steps(
        &mut self,
        steps: &'s [LocationStep],
        log: &mut LogCtx,
        headers: &HeaderMap,
    ) -> Ran<'s> {
        for step in steps {
            let r = match step {
                LocationStep::Set(v) => {
                    set(v, log, headers);
                    continue;
                }
                // Served here: by the `proxy_pass` in force (or `stub_status`); a
                // `return` after it is not run.
                LocationStep::Break => {
                    let action = match &self.location.action {
                        Some(Action::StubStatus) => Some(ActionRef::StubStatus),
                        _ => self.pass.map(ActionRef::Proxy),
                    };
                    // A URI a `rewrite` changed before it is served here, whole (as
                    // after `rewrite … break`).
                    let change = match self.search_again {
                        true => UriChange::Break,
                        false => self.uri_change,
                    };
                    return Ran::Answer(self.at(action, change));
                }
                LocationStep::If(i) => {
                    if !holds(&i.condition, log, headers) {
                        continue;
                    }
                    (self.settings, self.pass) = (&i.settings, i.pass.as_ref());
                    match self.steps(&i.steps, log, headers) {
                        Ran::Done => {}
                        other => return other,
                    }
                    if let Some(ret) = &i.ret {
                        return Ran::Answer(self.at(Some(ActionRef::Return(ret)), self.uri_change));
                    }
                    continue;
                }
                LocationStep::Rewrite(r) => r,
            };
            match rewrite(r, log, headers) {
                None => continue,
                Some(Rewritten::Redirect { code, url }) => {
                    let action = Some(ActionRef::Redirect(code, url));
                    return Ran::Answer(self.at(action, self.uri_change));
                }
                Some(Rewritten::Uri { .. }) => {}
            }
            *self.changes += 1;
            if *self.changes > MAX_URI_CHANGES {
                tracing::error!(uri = %log.uri, "rewrite or internal redirection cycle while processing the request: 500");
                return Ran::Answer(self.at(Some(ActionRef::Cycle), self.uri_change));
            }
            self.search_again = true;
            match r.flag {
                // Served here, by the `proxy_pass` in force (a `return` after the
                // `break` is not run).
                RewriteFlag::Break => {
                    let action = self.pass.map(ActionRef::Proxy);
                    return Ran::Answer(self.at(action, UriChange::Break));
                }
                RewriteFlag::Last => return Ran::Last,
                _ => {}
            }
        }
        Ran::Done
    }
}

/// Run `set`: the variable takes its value now.
fn set(v: &SetVar, log: &mut LogCtx, headers: &HeaderMap) {
    let value = log.vars(headers).expand(&v.value);
    match log.set_vars.iter_mut().find(|(n, _)| *n == v.name) {
        Some((_, old)) => *old = value,
        None => log.set_vars.push((v.name.clone(), value)),
    }
}

/// Whether an `if`'s condition holds for the request; a regex that matched leaves its
/// captures as `$1`….
fn holds(condition: &Condition, log: &mut LogCtx, headers: &HeaderMap) -> bool {
    let (holds, caps) = {
        let vars = log.vars(headers);
        let get = |name: &str| vars.get(name).into_owned();
        condition.holds_capturing(&get, &|t| vars.expand(t))
    };
    match caps {
        Some(Some(caps)) => set_captures(log, caps),
        Some(None) => clear_captures(log),
        None => {}
    }
    holds
}

/// A rewrite-module regex that did not match: `$1`… are empty after it, as nginx sets
/// `r->ncaptures = 0` (named groups keep their values).
fn clear_captures(log: &mut LogCtx) {
    let is_capture = |n: &str| hsmgate_config::nginx::capture_index(n).is_some();
    log.set_vars.retain(|(n, _)| !is_capture(n));
}

/// The captures of the regex that matched last, as `$0`…`$9` (those it does not have
/// are empty) in place of the earlier ones, and its named groups as variables of their
/// names (kept until another match sets them, as nginx keeps them).
fn set_captures(log: &mut LogCtx, caps: hsmgate_config::nginx::Captures) {
    clear_captures(log);
    (log.set_vars).extend((caps.numbered.into_iter().enumerate()).map(|(i, c)| (i.to_string(), c)));
    for (name, value) in caps.named {
        match log.set_vars.iter_mut().find(|(n, _)| *n == name) {
            Some((_, old)) => *old = value,
            None => log.set_vars.push((name, value)),
        }
    }
}

/// Apply `r` to the request's current URI; a new URI is stored in `log`.
fn rewrite(r: &Rewrite, log: &mut LogCtx, headers: &HeaderMap) -> Option<Rewritten> {
    let applied = {
        let vars = log.vars(headers);
        let args = vars.get("args").into_owned();
        r.apply(&log.uri, &args, &|name| vars.get(name).into_owned())
    };
    let Some((done, caps)) = applied else {
        clear_captures(log);
        return None;
    };
    // Its captures are `$1`… for what follows (a `return`, a `proxy_pass`).
    set_captures(log, caps);
    if let Rewritten::Uri { uri, args } = &done {
        tracing::debug!(pattern = %r.pattern, %uri, %args, "rewritten");
        log.uri.clone_from(uri);
        log.args = Some(args.clone());
    }
    Some(done)
}

/// The `proxy_pass` location `PATH/` when the request is `PATH` and no location is
/// written for `PATH` itself: nginx answers 301 to `PATH/` (before trying regexes).
fn auto_slash<'a>(locations: &'a [LocationBlock], path: &str) -> Option<&'a LocationBlock> {
    // `p == path + "/"`, without building that string for every request.
    let is_with_slash = |p: &str| p.strip_suffix('/') == Some(path);
    let target = locations.iter().find(|l| {
        matches!(&l.matcher, Matcher::Prefix(p) | Matcher::PrefixNoRegex(p) if is_with_slash(p))
            && matches!(l.action, Some(Action::ProxyPass(_)))
    })?;
    let written = locations.iter().any(|l| {
        matches!(&l.matcher, Matcher::Exact(p) | Matcher::Prefix(p) | Matcher::PrefixNoRegex(p) if p == path)
    });
    (!written).then_some(target)
}
