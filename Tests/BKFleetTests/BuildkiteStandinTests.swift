// The REST client end to end over HTTPS against the test fleet's Buildkite stand-in
// (Tests/Fleet/standins/buildkite), run on 127.0.0.1 on a free port with a temporary state
// directory and its own test CA. Needs python3 and openssl; no fleet, no root.
import Foundation
import XCTest
@testable import BKFleet

final class BuildkiteStandinTests: XCTestCase {
    private static let standinDir = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fleet/standins/buildkite")
    nonisolated(unsafe) private static var server: Standin?

    private var standin: Standin!

    override func setUpWithError() throws {
        if Self.server == nil {
            Self.server = try Standin.start(from: Self.standinDir)
        }
        standin = Self.server
        try standin.reset()
    }

    override class func tearDown() {
        server?.stop()
        server = nil
        super.tearDown()
    }

    private func client(token: [UInt8]? = nil, caFile: String?? = .none) -> BuildkiteClient {
        let api = BuildkiteAPI(org: "demo", url: standin.baseURL + "/", token: .command("x"),
                               caFile: caFile ?? standin.caFile,
                               location: SourceLocation(file: "inventory.toml", line: 3,
                                                        column: 1))
        return BuildkiteClient(api: api, token: token ?? standin.apiToken)
    }

    // MARK: Agents

    func test_fresh_organization_lists_no_agents() throws {
        XCTAssertEqual(try client().listAgents(), [])
    }

    func test_bad_api_token_gives_401_naming_url_and_buildkite_message_not_the_token() {
        let wrong = Array("bkua_not-the-right-token".utf8)
        XCTAssertThrowsError(try client(token: wrong).listAgents()) { error in
            XCTAssertEqual((error as? BuildkiteError)?.status, 401)
            let text = "\(error)"
            XCTAssertTrue(text.contains("\(standin.baseURL)/v2/organizations/demo/agents"), text)
            XCTAssertTrue(text.contains("Authentication required"), text)
            XCTAssertTrue(text.contains("[buildkite] token"), text)
            XCTAssertFalse(text.contains("not-the-right-token"), text)
        }
    }

    func test_untrusted_server_certificate_says_to_set_ca_file() {
        XCTAssertThrowsError(try client(caFile: .some(nil)).listAgents()) { error in
            guard case BuildkiteError.unreachable(_, _, let code, _) = error else {
                return XCTFail("expected a TLS failure, got \(error)")
            }
            XCTAssertEqual(code, 60)
            XCTAssertTrue("\(error)".contains("ca_file"), "\(error)")
        }
    }

    func test_unknown_organization_is_a_404_with_buildkite_message() {
        var api = client().api
        api.org = "nope"
        XCTAssertThrowsError(try BuildkiteClient(api: api, token: standin.apiToken)
            .listAgents()) { error in
            XCTAssertEqual((error as? BuildkiteError)?.status, 404)
            XCTAssertTrue("\(error)".contains("No organization found"), "\(error)")
        }
    }

    func test_listing_follows_pages_and_the_matcher_finds_the_connected_agent() throws {
        let start = Date().addingTimeInterval(-1)
        let token = try standin.clusterToken("default")
        let first = try standin.registerAgent(name: "builder-01-ci-1", hostname: "builder-01",
                                              token: token, tags: ["queue=default"])
        try standin.connect(first)
        _ = try standin.registerAgent(name: "builder-02-ci-1", hostname: "builder-02",
                                      token: token, tags: [])
        let gone = try standin.registerAgent(name: "builder-03-ci-1", hostname: "builder-03",
                                             token: token, tags: [])
        try standin.connect(gone)
        try standin.disconnect(gone)

        var small = client()
        small.pageSize = 1
        let agents = try small.listAgents()
        XCTAssertEqual(Set(agents.map(\.name)), ["builder-01-ci-1", "builder-02-ci-1"])

        let found = RegistrationMatch.find(in: agents, name: "builder-01-ci-1",
                                           hostname: "builder-01", startedAfter: start,
                                           skew: 5)
        XCTAssertEqual(found?.metaData, ["queue=default"])
        XCTAssertNil(RegistrationMatch.find(in: agents, name: "builder-02-ci-1",
                                            hostname: "builder-02", startedAfter: start,
                                            skew: 5), "registered but never connected")
    }

    // MARK: Cluster agent tokens

    func test_created_cluster_token_registers_agents_until_it_is_revoked() throws {
        let api = client()
        let created = try api.createClusterToken(cluster: "default", description: "rotation 1")
        XCTAssertFalse(created.id.isEmpty)
        XCTAssertFalse(created.value.isEmpty)

        let listed = try api.listClusterTokens(cluster: "default")
        XCTAssertEqual(listed.first { $0.id == created.id }?.description, "rotation 1")
        _ = try standin.registerAgent(name: "builder-01-ci-1", hostname: "builder-01",
                                      token: created.value, tags: [])

        try api.revokeClusterToken(cluster: "default", id: created.id)
        XCTAssertFalse(try api.listClusterTokens(cluster: "default")
            .contains { $0.id == created.id })
        XCTAssertThrowsError(try standin.registerAgent(
            name: "builder-01-ci-1", hostname: "builder-01", token: created.value, tags: [])) {
            XCTAssertEqual(($0 as? BuildkiteError)?.status, 401)
        }
    }

    func test_revoking_an_unknown_token_is_a_404() {
        XCTAssertThrowsError(try client().revokeClusterToken(cluster: "default",
                                                             id: "no-such-token")) {
            XCTAssertEqual(($0 as? BuildkiteError)?.status, 404)
            XCTAssertTrue("\($0)".contains("No token found"), "\($0)")
        }
    }

    func test_creating_a_token_without_description_reports_buildkite_validation_message() {
        XCTAssertThrowsError(try client().createClusterToken(cluster: "default",
                                                             description: "")) {
            XCTAssertEqual(($0 as? BuildkiteError)?.status, 422)
            XCTAssertTrue("\($0)".contains("description can't be blank"), "\($0)")
        }
    }
}

/// A running stand-in: its process, port and state directory.
private final class Standin {
    let process: Process
    let stateDir: URL
    let baseURL: String
    let caFile: String
    let apiToken: [UInt8]

    private init(process: Process, stateDir: URL, port: Int) throws {
        self.process = process
        self.stateDir = stateDir
        self.baseURL = "https://127.0.0.1:\(port)"
        self.caFile = stateDir.appendingPathComponent("ca.pem").path
        self.apiToken = Array(try Data(contentsOf: stateDir.appendingPathComponent("api-token")))
    }

    struct Failed: Error, CustomStringConvertible {
        var description: String
    }

    static func start(from standinDir: URL) throws -> Standin {
        let server = standinDir.appendingPathComponent("server.py").path
        guard FileManager.default.fileExists(atPath: server) else {
            throw Failed(description: "the Buildkite stand-in is missing at \(server)")
        }
        let stateDir = FileManager.default.temporaryDirectory
            .appendingPathComponent("bkfleet-standin-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: stateDir, withIntermediateDirectories: true)

        let setup = Process()
        setup.executableURL = URL(fileURLWithPath: "/bin/bash")
        setup.arguments = [standinDir.appendingPathComponent("setup.sh").path, stateDir.path]
        setup.standardOutput = FileHandle.nullDevice
        try setup.run()
        setup.waitUntilExit()
        guard setup.terminationStatus == 0 else {
            throw Failed(description: "setup.sh \(stateDir.path) failed")
        }

        let port = try freePort()
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", server, "--listen", "127.0.0.1", "--port", "\(port)",
                             "--state-dir", stateDir.path]
        let log = stateDir.appendingPathComponent("server.log")
        _ = FileManager.default.createFile(atPath: log.path, contents: nil)
        process.standardError = try FileHandle(forWritingTo: log)
        try process.run()

        let standin = try Standin(process: process, stateDir: stateDir, port: port)
        try standin.waitUntilServing(log: log)
        return standin
    }

    /// Polls until the server answers; the bound only stops a hung start.
    private func waitUntilServing(log: URL) throws {
        let deadline = Date().addingTimeInterval(30)
        while true {
            if !process.isRunning {
                let text = (try? String(contentsOf: log, encoding: .utf8)) ?? ""
                throw Failed(description: "the stand-in exited: \(text)")
            }
            let probe = HTTPRequest(method: "GET", url: baseURL + "/", caFile: caFile,
                                    connectTimeout: 1, totalTimeout: 2)
            if let answer = try? HTTPClient.send(probe), answer.status == 200 { return }
            guard Date() < deadline else {
                stop()
                throw Failed(description: "the stand-in did not start serving on \(baseURL)")
            }
            usleep(100_000)
        }
    }

    func stop() {
        guard process.isRunning else { return }
        kill(process.processIdentifier, SIGTERM)
        process.waitUntilExit()
        try? FileManager.default.removeItem(at: stateDir)
    }

    func reset() throws {
        _ = try call("POST", "/_test/reset", body: "{}")
    }

    func clusterToken(_ name: String) throws -> [UInt8] {
        var value = Array(try Data(contentsOf: stateDir.appendingPathComponent(
            "tokens/\(name).token")))
        while value.last == 0x0A { value.removeLast() }
        return value
    }

    /// Registers like a real agent does (`POST /v3/register`); returns its session token.
    func registerAgent(name: String, hostname: String, token: [UInt8],
                       tags: [String]) throws -> [UInt8] {
        let body = try JSONSerialization.data(withJSONObject: [
            "name": name, "hostname": hostname, "meta_data": tags])
        let answer = try call("POST", "/v3/register", body: String(decoding: body, as: UTF8.self),
                              authorization: Array("Authorization: Token ".utf8) + token)
        let object = try JSONSerialization.jsonObject(with: Data(answer.body)) as? [String: Any]
        guard let access = object?["access_token"] as? String else {
            throw Failed(description: "registration answer without access_token")
        }
        return Array(access.utf8)
    }

    func connect(_ session: [UInt8]) throws {
        _ = try call("POST", "/v3/connect", body: "{}",
                     authorization: Array("Authorization: Token ".utf8) + session)
    }

    func disconnect(_ session: [UInt8]) throws {
        _ = try call("POST", "/v3/disconnect", body: "{}",
                     authorization: Array("Authorization: Token ".utf8) + session)
    }

    private func call(_ method: String, _ path: String, body: String,
                      authorization: [UInt8]? = nil) throws -> HTTPResponse {
        let request = HTTPRequest(method: method, url: baseURL + path,
                                  headers: ["Content-Type: application/json"],
                                  secretHeader: authorization, body: Array(body.utf8),
                                  caFile: caFile)
        let answer = try HTTPClient.send(request)
        guard (200..<300).contains(answer.status) else {
            throw BuildkiteError.http(method: method, url: baseURL + path, status: answer.status,
                                      message: BuildkiteClient.errorMessage(answer.body))
        }
        return answer
    }

    /// A TCP port on 127.0.0.1 that was free a moment ago (bound to 0, then closed).
    private static func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw Failed(description: "socket() failed") }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0
            }
        }
        guard bound else { throw Failed(description: "cannot bind a port on 127.0.0.1") }
        return Int(UInt16(bigEndian: address.sin_port))
    }
}
