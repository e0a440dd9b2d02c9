//! Route selection: which policy covers a request. The model
//! ([`crate::policy::RouteEntry`], [`RouteMatch`]) lives in
//! [`crate::policy`]; this module reads the request against it, once per
//! request, first matching entry wins.

use crate::policy::{Plugin, Policy, RouteMatch};
use crate::request::Request;
use std::rc::Rc;

impl Plugin {
    /// The policy for a request: the first route entry that matches, else
    /// the global policy. `None`: pass the request through untouched (a
    /// matching disabled entry, or no entry and no global `versions`). The
    /// `Rc` is the handle the response phase keeps.
    pub fn select(&self, req: &Request<'_>) -> Option<&Rc<Policy>> {
        if self.routes.is_empty() {
            return self.global.as_ref();
        }
        // The path and authority once, not once per entry.
        let parts = RequestParts {
            path: req.path(),
            authority: req.authority(),
        };
        match self
            .routes
            .iter()
            .find(|e| e.matcher.matches_parts(req, &parts))
        {
            Some(entry) => entry.policy.as_ref(),
            None => self.global.as_ref(),
        }
    }
}

/// What route entries match on, read from the request once.
struct RequestParts<'a> {
    path: &'a str,
    authority: Option<&'a str>,
}

impl RouteMatch {
    /// Does this entry match the request? Every non-empty list must have a
    /// hit.
    pub fn matches(&self, req: &Request<'_>) -> bool {
        let parts = RequestParts {
            path: req.path(),
            authority: req.authority(),
        };
        self.matches_parts(req, &parts)
    }

    fn matches_parts(&self, req: &Request<'_>, parts: &RequestParts<'_>) -> bool {
        let any = |list: &[String], v: Option<&str>| {
            list.is_empty() || v.is_some_and(|v| list.iter().any(|x| x == v))
        };
        any(&self.route_names, req.route_name)
            && any(&self.virtual_hosts, req.virtual_host)
            && (self.authorities.is_empty()
                || parts
                    .authority
                    .is_some_and(|a| self.authorities.iter().any(|p| p.is_match(a))))
            && (self.path_prefixes.is_empty()
                || self
                    .path_prefixes
                    .iter()
                    .any(|p| parts.path.starts_with(p.as_str())))
    }
}
