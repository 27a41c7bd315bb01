//! Connection and request counts for nginx's `stub_status` page, kept as nginx keeps
//! them: connections accepted and handled, client requests, and the connections open
//! now split into those in their handshake (Reading: hsmgate counts a connection's TLS
//! handshake and PROXY header here, where nginx counts a request head being read),
//! those with a request in progress (Writing: from its head to the end of its answer),
//! and the others (Waiting: idle keep-alive, or reading a head).

use std::sync::atomic::{AtomicU64, Ordering};

static ACCEPTS: AtomicU64 = AtomicU64::new(0);
static REQUESTS: AtomicU64 = AtomicU64::new(0);
static ACTIVE: AtomicU64 = AtomicU64::new(0);
static READING: AtomicU64 = AtomicU64::new(0);
static WRITING: AtomicU64 = AtomicU64::new(0);

/// Counted in one of the gauges while it lives.
#[derive(Debug)]
pub(crate) struct Gauge(&'static AtomicU64);

impl Drop for Gauge {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

fn enter(g: &'static AtomicU64) -> Gauge {
    g.fetch_add(1, Ordering::Relaxed);
    Gauge(g)
}

/// A connection accepted: counted, and active while the gauge lives.
pub(crate) fn accepted() -> Gauge {
    ACCEPTS.fetch_add(1, Ordering::Relaxed);
    enter(&ACTIVE)
}

/// A connection in its handshake while the gauge lives.
pub(crate) fn reading() -> Gauge {
    enter(&READING)
}

/// A request: counted, and in progress while the gauge lives.
pub(crate) fn request() -> Gauge {
    REQUESTS.fetch_add(1, Ordering::Relaxed);
    enter(&WRITING)
}

/// nginx's `stub_status` page.
pub(crate) fn page() -> String {
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let (active, reading, writing) = (load(&ACTIVE), load(&READING), load(&WRITING));
    let accepts = load(&ACCEPTS);
    let waiting = active.saturating_sub(reading).saturating_sub(writing);
    format!(
        "Active connections: {active} \nserver accepts handled requests\n {accepts} {accepts} {} \nReading: {reading} Writing: {writing} Waiting: {waiting} \n",
        load(&REQUESTS)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_has_nginx_s_layout() {
        let page = page();
        let lines: Vec<&str> = page.lines().collect();
        assert_eq!(lines.len(), 4, "{page}");
        assert!(lines[0].starts_with("Active connections: ") && lines[0].ends_with(' '));
        assert_eq!(lines[1], "server accepts handled requests");
        assert_eq!(lines[2].split_whitespace().count(), 3);
        assert!(lines[3].starts_with("Reading: ") && lines[3].contains(" Writing: "));
    }
}
