// A small synchronous HTTPS client over libcurl easy handles, for the Buildkite REST API.
// Each call gets its own easy handle, so any number of threads may call at once. It does
// not follow redirects (a redirect would carry the bearer token elsewhere), keeps no
// connection pool and never logs a header or body: the caller decides what to show.
import CCurl
import Foundation

/// One request. `secretHeader` is kept apart from `headers` because it holds a secret
/// (the bearer token): it is built from bytes, handed to libcurl and never described.
public struct HTTPRequest: Sendable {
    public var method: String
    public var url: String
    public var headers: [String] = []
    /// A complete header line such as `Authorization: Bearer …`, as bytes.
    public var secretHeader: [UInt8]?
    public var body: [UInt8]?
    /// A PEM bundle to trust instead of the system's (CURLOPT_CAINFO).
    public var caFile: String?
    public var connectTimeout: TimeInterval = 10
    public var totalTimeout: TimeInterval = 30

    public init(method: String, url: String, headers: [String] = [],
                secretHeader: [UInt8]? = nil, body: [UInt8]? = nil, caFile: String? = nil,
                connectTimeout: TimeInterval = 10, totalTimeout: TimeInterval = 30) {
        self.method = method
        self.url = url
        self.headers = headers
        self.secretHeader = secretHeader
        self.body = body
        self.caFile = caFile
        self.connectTimeout = connectTimeout
        self.totalTimeout = totalTimeout
    }
}

public struct HTTPResponse: Sendable {
    public var status: Int
    /// Header fields of the final response in arrival order; names as the server sent them.
    public var headers: [(name: String, value: String)]
    public var body: [UInt8]

    /// The first header with this name, compared case-insensitively.
    public func header(_ name: String) -> String? {
        let wanted = name.lowercased()
        return headers.first { $0.name.lowercased() == wanted }?.value
    }
}

/// Failures below HTTP: no response arrived at all.
public struct HTTPTransportError: Error, Equatable, CustomStringConvertible {
    /// The URL without user or password.
    public var url: String
    public var curlCode: Int
    public var message: String

    public var description: String {
        "\(url): \(message) (libcurl error \(curlCode))"
    }
}

public enum HTTPClient {
    public static func send(_ request: HTTPRequest) throws -> HTTPResponse {
        // libcurl is loaded (and globally initialised) once, on the first request.
        if let why = ccurl_load() {
            throw HTTPTransportError(url: redacted(request.url), curlCode: -1,
                                     message: "libcurl could not be loaded ("
                                     + String(cString: why) + "); install libcurl4 "
                                     + "(Debian: apt-get install libcurl4)")
        }
        guard let handle = ccurl_easy_init() else {
            throw HTTPTransportError(url: redacted(request.url), curlCode: -1,
                                     message: "libcurl could not create a handle")
        }
        defer { ccurl_easy_cleanup(handle) }

        let sink = ResponseSink()
        let sinkPointer = Unmanaged.passUnretained(sink).toOpaque()
        var errorBuffer = [CChar](repeating: 0, count: Int(CURL_ERROR_SIZE) + 1)
        var headerList: UnsafeMutablePointer<curl_slist>?
        defer { ccurl_slist_free_all(headerList) }

        // The body must stay at one address until curl_easy_perform returns.
        let body = request.body ?? []
        let code: CURLcode = body.withUnsafeBufferPointer { bodyBuffer in
            errorBuffer.withUnsafeMutableBufferPointer { errorBytes in
                var failed = CURLE_OK
                func set(_ result: CURLcode) {
                    if failed == CURLE_OK && result != CURLE_OK { failed = result }
                }

                set(ccurl_setopt_string(handle, CURLOPT_URL, request.url))
                set(ccurl_setopt_string(handle, CURLOPT_PROTOCOLS_STR, "http,https"))
                set(ccurl_setopt_long(handle, CURLOPT_FOLLOWLOCATION, 0))
                // Threads must not get SIGALRM-based DNS timeouts.
                set(ccurl_setopt_long(handle, CURLOPT_NOSIGNAL, 1))
                set(ccurl_setopt_long(handle, CURLOPT_CONNECTTIMEOUT_MS,
                                      milliseconds(request.connectTimeout)))
                set(ccurl_setopt_long(handle, CURLOPT_TIMEOUT_MS,
                                      milliseconds(request.totalTimeout)))
                set(ccurl_setopt_pointer(handle, CURLOPT_ERRORBUFFER, errorBytes.baseAddress))
                if let caFile = request.caFile {
                    set(ccurl_setopt_string(handle, CURLOPT_CAINFO, caFile))
                }

                switch request.method {
                case "GET":
                    set(ccurl_setopt_long(handle, CURLOPT_HTTPGET, 1))
                case "POST":
                    set(ccurl_setopt_long(handle, CURLOPT_POST, 1))
                case "HEAD":
                    set(ccurl_setopt_long(handle, CURLOPT_NOBODY, 1))
                default:
                    set(ccurl_setopt_string(handle, CURLOPT_CUSTOMREQUEST, request.method))
                }
                if request.body != nil {
                    set(ccurl_setopt_long(handle, CURLOPT_POSTFIELDSIZE, bodyBuffer.count))
                    let bytes = UnsafeMutableRawPointer(mutating: bodyBuffer.baseAddress)
                    // An empty body still needs a non-null pointer, or libcurl reads stdin.
                    set(ccurl_setopt_pointer(handle, CURLOPT_POSTFIELDS, bytes ?? sinkPointer))
                }

                // "Expect: 100-continue" only adds a round trip for small JSON bodies.
                for line in request.headers + ["Expect:"] {
                    headerList = ccurl_slist_append(headerList, line)
                }
                if let secret = request.secretHeader {
                    // curl_slist_append copies the line; wipe our C copy straight after.
                    var cLine = secret + [0]
                    cLine.withUnsafeMutableBufferPointer { buffer in
                        buffer.baseAddress!.withMemoryRebound(to: CChar.self,
                                                              capacity: buffer.count) {
                            headerList = ccurl_slist_append(headerList, $0)
                        }
                        for index in buffer.indices { buffer[index] = 0 }
                    }
                }
                set(ccurl_setopt_pointer(handle, CURLOPT_HTTPHEADER, headerList))

                set(ccurl_setopt_write(handle, CURLOPT_WRITEFUNCTION, collectBody))
                set(ccurl_setopt_pointer(handle, CURLOPT_WRITEDATA, sinkPointer))
                set(ccurl_setopt_write(handle, CURLOPT_HEADERFUNCTION, collectHeader))
                set(ccurl_setopt_pointer(handle, CURLOPT_HEADERDATA, sinkPointer))
                if failed != CURLE_OK { return failed }

                return ccurl_easy_perform(handle)
            }
        }

        guard code == CURLE_OK else {
            let detail = String(cString: errorBuffer)
            let message = detail.isEmpty ? String(cString: ccurl_easy_strerror(code)) : detail
            throw HTTPTransportError(url: redacted(request.url), curlCode: Int(code.rawValue),
                                     message: message)
        }
        var status = 0
        _ = ccurl_getinfo_long(handle, CURLINFO_RESPONSE_CODE, &status)
        return withExtendedLifetime(sink) {
            HTTPResponse(status: status, headers: sink.headers, body: sink.body)
        }
    }

    /// The URL as it may appear in a message: any `user:password@` removed.
    public static func redacted(_ url: String) -> String {
        guard let schemeEnd = url.range(of: "://") else { return url }
        let rest = url[schemeEnd.upperBound...]
        let authorityEnd = rest.firstIndex { $0 == "/" || $0 == "?" || $0 == "#" }
            ?? rest.endIndex
        guard let at = rest[..<authorityEnd].lastIndex(of: "@") else { return url }
        return String(url[..<schemeEnd.upperBound]) + String(rest[rest.index(after: at)...])
    }

    private static func milliseconds(_ seconds: TimeInterval) -> Int {
        max(1, Int((seconds * 1000).rounded()))
    }
}

/// Collects what libcurl hands to the callbacks of one transfer.
private final class ResponseSink {
    var body: [UInt8] = []
    var headers: [(name: String, value: String)] = []

    func addHeaderLine(_ line: String) {
        let trimmed = line.trimmingCharacters(in: .whitespacesAndNewlines)
        // A status line starts a new response (after a 100 Continue or a proxy's 200).
        if trimmed.hasPrefix("HTTP/") {
            headers.removeAll()
            return
        }
        guard let colon = trimmed.firstIndex(of: ":") else { return }
        let name = String(trimmed[..<colon])
        let value = trimmed[trimmed.index(after: colon)...]
            .trimmingCharacters(in: .whitespaces)
        headers.append((name: name, value: value))
    }
}

private let collectBody: ccurl_write_fn = { data, size, count, context in
    let length = size * count
    guard let data, let context else { return length }
    let sink = Unmanaged<ResponseSink>.fromOpaque(context).takeUnretainedValue()
    data.withMemoryRebound(to: UInt8.self, capacity: length) {
        sink.body.append(contentsOf: UnsafeBufferPointer(start: $0, count: length))
    }
    return length
}

private let collectHeader: ccurl_write_fn = { data, size, count, context in
    let length = size * count
    guard let data, let context else { return length }
    let sink = Unmanaged<ResponseSink>.fromOpaque(context).takeUnretainedValue()
    let bytes = data.withMemoryRebound(to: UInt8.self, capacity: length) {
        Array(UnsafeBufferPointer(start: $0, count: length))
    }
    sink.addHeaderLine(String(decoding: bytes, as: UTF8.self))
    return length
}
