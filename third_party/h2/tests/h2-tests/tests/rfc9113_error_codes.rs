//! The error codes RFC 9113 prescribes for frame-size, window-size, HPACK and
//! closed-stream errors, as a server sees them.
#![deny(warnings)]

use futures::StreamExt;
use h2_support::prelude::*;

/// Sends `bytes` after the handshake and expects a connection error `reason`.
async fn expect_go_away(bytes: &'static [u8], reason: Reason) {
    h2_support::trace_init!();
    let (io, mut client) = mock::new();

    let client = async move {
        let settings = client.assert_server_handshake().await;
        assert_default_settings!(settings);
        client.send_bytes(bytes).await;
        client.recv_frame(frames::go_away(0).reason(reason)).await;
        client.recv_eof().await;
    };

    let srv = async move {
        let mut srv = server::handshake(io).await.expect("handshake");
        let err = srv.next().await.unwrap().unwrap_err();
        assert_eq!(err.reason(), Some(reason));
    };

    join(client, srv).await;
}

#[tokio::test]
async fn recv_settings_of_bad_length_is_frame_size_error() {
    // Section 6.5: a length that is not a multiple of 6.
    expect_go_away(
        &[0, 0, 5, 4, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0],
        Reason::FRAME_SIZE_ERROR,
    )
    .await;
}

#[tokio::test]
async fn recv_settings_ack_with_payload_is_frame_size_error() {
    // Section 6.5: an ACK with a length other than 0.
    expect_go_away(
        &[0, 0, 6, 4, 1, 0, 0, 0, 0, 0, 3, 0, 0, 0, 100],
        Reason::FRAME_SIZE_ERROR,
    )
    .await;
}

#[tokio::test]
async fn recv_ping_of_bad_length_is_frame_size_error() {
    // Section 6.7: a length other than 8.
    expect_go_away(
        &[0, 0, 7, 6, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        Reason::FRAME_SIZE_ERROR,
    )
    .await;
}

#[tokio::test]
async fn recv_window_update_of_bad_length_is_frame_size_error() {
    // Section 6.9: a length other than 4.
    expect_go_away(
        &[0, 0, 3, 8, 0, 0, 0, 0, 0, 0, 0, 1],
        Reason::FRAME_SIZE_ERROR,
    )
    .await;
    expect_go_away(
        &[0, 0, 5, 8, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0],
        Reason::FRAME_SIZE_ERROR,
    )
    .await;
}

#[tokio::test]
async fn recv_rst_stream_of_bad_length_is_frame_size_error() {
    // Section 6.4: a length other than 4.
    expect_go_away(
        &[0, 0, 3, 3, 0, 0, 0, 0, 1, 0, 0, 8],
        Reason::FRAME_SIZE_ERROR,
    )
    .await;
    expect_go_away(
        &[0, 0, 5, 3, 0, 0, 0, 0, 1, 0, 0, 0, 8, 0],
        Reason::FRAME_SIZE_ERROR,
    )
    .await;
}

#[tokio::test]
async fn recv_initial_window_size_over_max_is_flow_control_error() {
    // Section 6.5.2: SETTINGS_INITIAL_WINDOW_SIZE above 2^31-1.
    expect_go_away(
        &[0, 0, 6, 4, 0, 0, 0, 0, 0, 0, 4, 0x80, 0, 0, 0],
        Reason::FLOW_CONTROL_ERROR,
    )
    .await;
}

#[tokio::test]
async fn recv_other_bad_setting_is_still_protocol_error() {
    // Section 6.5.2: SETTINGS_ENABLE_PUSH of 2.
    expect_go_away(
        &[0, 0, 6, 4, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 2],
        Reason::PROTOCOL_ERROR,
    )
    .await;
}

#[tokio::test]
async fn recv_hpack_invalid_index_is_compression_error() {
    // Section 4.3: HEADERS (END_STREAM | END_HEADERS) on stream 1 whose block
    // is the indexed field 190, past the static and (empty) dynamic tables.
    expect_go_away(
        &[0, 0, 2, 1, 5, 0, 0, 0, 1, 0xff, 0x3f],
        Reason::COMPRESSION_ERROR,
    )
    .await;
}

#[tokio::test]
async fn recv_hpack_truncated_block_is_compression_error() {
    // Section 4.3: a literal whose value runs past the end of the block.
    expect_go_away(
        &[0, 0, 5, 1, 5, 0, 0, 0, 1, 0x00, 0x01, b'a', 0x0a, b'b'],
        Reason::COMPRESSION_ERROR,
    )
    .await;
}

#[tokio::test]
async fn recv_priority_of_bad_length_is_stream_frame_size_error() {
    // Section 6.3: a stream error; the connection goes on.
    h2_support::trace_init!();
    let (io, mut client) = mock::new();

    let client = async move {
        let settings = client.assert_server_handshake().await;
        assert_default_settings!(settings);
        client
            .send_bytes(&[0, 0, 4, 2, 0, 0, 0, 0, 1, 0, 0, 0, 0])
            .await;
        client
            .recv_frame(frames::reset(1).reason(Reason::FRAME_SIZE_ERROR))
            .await;
        client
            .send_frame(
                frames::headers(3)
                    .request("GET", "https://example.com/")
                    .eos(),
            )
            .await;
        client
            .recv_frame(frames::headers(3).response(200).eos())
            .await;
    };

    let srv = async move {
        let mut srv = server::handshake(io).await.expect("handshake");
        let (req, mut stream) = srv.next().await.unwrap().unwrap();
        assert_eq!(req.method(), &http::Method::GET);
        let rsp = http::Response::builder().status(200).body(()).unwrap();
        stream.send_response(rsp, true).unwrap();
        assert!(srv.next().await.is_none());
    };

    join(client, srv).await;
}

#[tokio::test]
async fn recv_data_on_half_closed_remote_stream_is_stream_closed() {
    // Sections 5.1 and 6.1: a stream error; the connection goes on.
    h2_support::trace_init!();
    let (io, mut client) = mock::new();

    let client = async move {
        let settings = client.assert_server_handshake().await;
        assert_default_settings!(settings);
        client
            .send_frame(
                frames::headers(1)
                    .request("GET", "https://example.com/")
                    .eos(),
            )
            .await;
        client.send_frame(frames::data(1, &b"x"[..]).eos()).await;
        client.recv_frame(frames::reset(1).stream_closed()).await;
        client
            .send_frame(
                frames::headers(3)
                    .request("GET", "https://example.com/")
                    .eos(),
            )
            .await;
        client
            .recv_frame(frames::headers(3).response(200).eos())
            .await;
    };

    let srv = async move {
        let mut srv = server::handshake(io).await.expect("handshake");
        // Stream 1 is accepted, then reset by the library before it is answered.
        let (_req, _stream) = srv.next().await.unwrap().unwrap();
        let (_req, mut stream) = srv.next().await.unwrap().unwrap();
        let rsp = http::Response::builder().status(200).body(()).unwrap();
        stream.send_response(rsp, true).unwrap();
        assert!(srv.next().await.is_none());
    };

    join(client, srv).await;
}
