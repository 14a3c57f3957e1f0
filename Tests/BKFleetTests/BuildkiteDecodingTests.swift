// What bkfleet reads from Buildkite's answers without a server: agent and token JSON,
// paging Link headers, the base URL forms an inventory may give, and error wording.
// The stand-in tests (BuildkiteStandinTests) cover the same over real HTTPS.
import XCTest
@testable import BKFleet

final class BuildkiteDecodingTests: XCTestCase {
    private func decodeAgents(_ json: String) throws -> [BuildkiteAgent] {
        try JSONDecoder().decode([BuildkiteAgent].self, from: Data(json.utf8))
    }

    func test_agent_list_decodes_the_fields_bkfleet_uses_and_ignores_the_rest() throws {
        let agents = try decodeAgents("""
        [{"id": "0b46", "graphql_id": "QWdl", "name": "builder-01-ci-1",
          "connection_state": "connected", "hostname": "builder-01",
          "ip_address": "10.250.0.11", "version": "3.80.0",
          "created_at": "2024-05-01T10:00:00.250Z", "job": null,
          "meta_data": ["queue=default", "os=linux"], "creator": {"name": "x"}}]
        """)
        XCTAssertEqual(agents, [BuildkiteAgent(
            id: "0b46", name: "builder-01-ci-1", hostname: "builder-01",
            connectionState: "connected",
            createdAt: Date(timeIntervalSince1970: 1_714_557_600.25),
            metaData: ["queue=default", "os=linux"])])
    }

    func test_created_at_is_read_with_or_without_fractional_seconds_and_with_offsets() {
        let base = Date(timeIntervalSince1970: 1_714_557_600)
        XCTAssertEqual(BuildkiteTime.parse("2024-05-01T10:00:00Z"), base)
        XCTAssertEqual(BuildkiteTime.parse("2024-05-01T10:00:00.500Z"),
                       base.addingTimeInterval(0.5))
        XCTAssertEqual(BuildkiteTime.parse("2024-05-01T12:00:00+02:00"), base)
        XCTAssertNil(BuildkiteTime.parse("yesterday"))
    }

    func test_missing_hostname_and_meta_data_decode_as_empty() throws {
        let agents = try decodeAgents("""
        [{"id": "a", "name": "n", "connection_state": "never_connected",
          "created_at": "2024-05-01T10:00:00Z", "hostname": null, "meta_data": null}]
        """)
        XCTAssertEqual(agents.first?.hostname, "")
        XCTAssertEqual(agents.first?.metaData, [])
    }

    func test_unreadable_created_at_fails_decoding_naming_the_field() {
        XCTAssertThrowsError(try decodeAgents("""
        [{"id": "a", "name": "n", "connection_state": "connected",
          "created_at": "last tuesday"}]
        """)) { error in
            XCTAssertTrue("\(error)".contains("last tuesday"), "\(error)")
        }
    }

    func test_cluster_token_listing_decodes_without_a_value() throws {
        let tokens = try JSONDecoder().decode([ClusterToken].self, from: Data("""
        [{"id": "b600", "description": "Windows agents", "expires_at": null,
          "created_at": "2024-01-01T00:00:00.000Z", "allowed_ip_addresses": "10.0.0.0/8"}]
        """.utf8))
        XCTAssertEqual(tokens, [ClusterToken(
            id: "b600", description: "Windows agents",
            createdAt: Date(timeIntervalSince1970: 1_704_067_200), expiresAt: nil)])
    }

    // MARK: Link header

    func test_link_header_gives_the_next_page_among_several_rels() {
        let header = "<https://api.buildkite.com/v2/organizations/o/agents?page=3&per_page=100>; "
            + "rel=\"next\", <https://api.buildkite.com/v2/organizations/o/agents?page=9"
            + "&per_page=100>; rel=\"last\", <https://api.buildkite.com/v2/organizations/o/"
            + "agents?page=1&per_page=100>; rel=\"first\""
        XCTAssertEqual(LinkHeader.next(header),
                       "https://api.buildkite.com/v2/organizations/o/agents?page=3&per_page=100")
        XCTAssertEqual(LinkHeader.parse(header)["last"],
                       "https://api.buildkite.com/v2/organizations/o/agents?page=9&per_page=100")
    }

    func test_link_header_on_the_last_page_has_no_next() {
        let header = "<https://h/v2/x?page=1>; rel=\"first\", "
            + "<https://h/v2/x?page=1>; rel=\"prev\""
        XCTAssertNil(LinkHeader.next(header))
        XCTAssertNil(LinkHeader.next(nil))
        XCTAssertNil(LinkHeader.next(""))
    }

    func test_link_header_accepts_unquoted_and_multiple_rels_and_commas_in_urls() {
        let links = LinkHeader.parse("<https://h/a?x=1,2>;rel=next ; title=\"p\",<https://h/b>; "
                                     + "REL=\"last LAST2\"")
        XCTAssertEqual(links["next"], "https://h/a?x=1,2")
        XCTAssertEqual(links["last"], "https://h/b")
        XCTAssertEqual(links["last2"], "https://h/b")
    }

    // MARK: URLs and messages

    func test_api_url_is_accepted_with_trailing_slash_or_v2() {
        for url in ["https://api.buildkite.com", "https://api.buildkite.com/",
                    "https://api.buildkite.com/v2", "https://api.buildkite.com/v2/"] {
            XCTAssertEqual(BuildkiteClient.normalizedBase(url), "https://api.buildkite.com", url)
        }
    }

    func test_org_and_ids_cannot_add_path_steps() {
        XCTAssertEqual(BuildkiteClient.segment("a/../b"), "a%2F..%2Fb")
        XCTAssertEqual(BuildkiteClient.segment("my-org"), "my-org")
    }

    func test_urls_in_messages_lose_their_credentials() {
        XCTAssertEqual(HTTPClient.redacted("https://me:secret@h:8443/v2/x?page=2"),
                       "https://h:8443/v2/x?page=2")
        XCTAssertEqual(HTTPClient.redacted("https://h/v2/a@b"), "https://h/v2/a@b")
    }

    func test_error_message_comes_from_buildkite_json_or_the_body_start() {
        XCTAssertEqual(BuildkiteClient.errorMessage(Array(#"{"message": "No org found"}"#.utf8)),
                       "No org found")
        XCTAssertEqual(BuildkiteClient.errorMessage(
            Array(#"{"errors": [{"message": "a"}, {"message": "b"}]}"#.utf8)), "a; b")
        XCTAssertEqual(BuildkiteClient.errorMessage(Array("<html>\nBad gateway".utf8)),
                       "<html>")
    }

    func test_http_error_names_url_status_message_and_next_step() {
        let error = BuildkiteError.http(method: "GET",
                                        url: "https://api.buildkite.com/v2/organizations/o/agents",
                                        status: 401, message: "Authentication required")
        let text = error.description
        XCTAssertTrue(text.contains("https://api.buildkite.com/v2/organizations/o/agents"))
        XCTAssertTrue(text.contains("HTTP 401"))
        XCTAssertTrue(text.contains("Authentication required"))
        XCTAssertTrue(text.contains("[buildkite] token"))
    }

    func test_token_with_a_line_break_is_never_sent() {
        let api = BuildkiteAPI(org: "demo", url: "https://127.0.0.1:9", token: .command("x"),
                               caFile: nil,
                               location: SourceLocation(file: "i.toml", line: 1, column: 1))
        let client = BuildkiteClient(api: api, token: Array("abc\ndef".utf8))
        XCTAssertThrowsError(try client.listAgents()) { error in
            guard case BuildkiteError.tokenUnusable = error else {
                return XCTFail("expected tokenUnusable, got \(error)")
            }
            XCTAssertFalse("\(error)".contains("abc"))
        }
    }
}
