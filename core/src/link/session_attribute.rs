//! rtcmesh's own session-level SDP attributes (`a=x-rtcmesh-*`): the channel layout
//! ([`layout`](super::layout)) and the offer of its own retransmission
//! ([`reliable`](super::reliable)). They sit before the first media section, where RFC 8866
//! §5.13 has a receiver ignore attributes it does not know, so a browser or Godot peer accepts
//! the SDP unchanged.

/// `sdp` with the attribute `line` (without its line end) at session level: before the first
/// media section, or at the end of an SDP without one.
pub(super) fn add(sdp: String, line: &str) -> String {
    let mut out = String::with_capacity(sdp.len() + line.len() + 2);
    let at = sdp.find("\nm=").map_or(sdp.len(), |i| i + 1);
    out.push_str(&sdp[..at]);
    out.push_str(line);
    out.push_str("\r\n");
    out.push_str(&sdp[at..]);
    out
}

/// The value of the first session-level attribute that starts with `prefix` (e.g.
/// `a=x-rtcmesh-channels:`), without its line end; media sections are not searched.
pub(super) fn find<'a>(sdp: &'a str, prefix: &str) -> Option<&'a str> {
    sdp.lines()
        .take_while(|l| !l.starts_with("m="))
        .find_map(|l| l.trim_end().strip_prefix(prefix))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_attribute_goes_before_the_first_media_section_and_is_found_only_there() {
        let sdp =
            "v=0\r\nt=0 0\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=x-a:media\r\n";
        let with = add(sdp.to_string(), "a=x-b:1");
        assert_eq!(
            with,
            "v=0\r\nt=0 0\r\na=x-b:1\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=x-a:media\r\n"
        );
        assert_eq!(find(&with, "a=x-b:"), Some("1"));
        assert_eq!(
            find(&with, "a=x-a:"),
            None,
            "media level is not session level"
        );
        let both = add(with, "a=x-c:2 R");
        assert_eq!(find(&both, "a=x-b:"), Some("1"));
        assert_eq!(find(&both, "a=x-c:"), Some("2 R"));
        // No media section: at the end.
        assert_eq!(add("v=0\r\n".to_string(), "a=x-b:1"), "v=0\r\na=x-b:1\r\n");
        assert_eq!(
            find("v=0\na=x-b:7\n", "a=x-b:"),
            Some("7"),
            "bare line ends too"
        );
    }
}
