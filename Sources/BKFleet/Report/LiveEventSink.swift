// The live view on a terminal: one line per host in flight (host, current step, time
// since it started) and a fleet-wide progress bar, redrawn in place with ANSI cursor
// moves. It only draws; the caller decides it is on a terminal, and prints the final
// table after `stop()` has erased the live lines. It never shows a step's output.
import Foundation

public final class LiveEventSink: EventSink, @unchecked Sendable {
    private struct Flight {
        var step: Step
        var message: String
        var started: Date
    }

    private let lock = NSLock()
    private let total: Int
    private let color: Bool
    private let verbose: Bool
    private let write: (String) -> Void
    private let now: () -> Date
    private let columns: () -> Int
    private let maxHostLines: Int
    private let minInterval: TimeInterval

    private var flights: [String: Flight] = [:]
    private var order: [String] = []
    private var done = 0, changed = 0, failed = 0
    private let began: Date
    private var drawnLines = 0
    private var lastDraw: Date?
    private var stopped = false
    private var timer: DispatchSourceTimer?

    /// - Parameters:
    ///   - total: hosts the run will attempt, for the progress bar.
    ///   - verbose: also print each event as a plain line above the live view.
    ///   - minInterval: redraws closer together than this are skipped (the ticker
    ///     catches up), so hundreds of hosts do not flood the terminal.
    public init(total: Int, color: Bool, verbose: Bool = false, maxHostLines: Int = 20,
                minInterval: TimeInterval = 0.1,
                columns: @escaping () -> Int = LiveEventSink.terminalColumns,
                now: @escaping () -> Date = Date.init,
                write: @escaping (String) -> Void = LiveEventSink.writeStdout) {
        self.total = total
        self.color = color
        self.verbose = verbose
        self.maxHostLines = max(1, maxHostLines)
        self.minInterval = minInterval
        self.columns = columns
        self.now = now
        self.write = write
        began = now()
    }

    // MARK: - Events

    public func event(host: String, step: Step, message: String) {
        lock.withLock {
            let time = now()
            if var flight = flights[host] {
                flight.step = step
                flight.message = message
                flights[host] = flight
            } else {
                flights[host] = Flight(step: step, message: message, started: time)
                order.append(host)
            }
            let line = verbose ? LineEventSink.format(host: host, step: step, message: message)
                : nil
            redraw(at: time, above: line, force: line != nil)
        }
    }

    public func finished(_ report: HostReport) {
        lock.withLock {
            flights[report.host] = nil
            order.removeAll { $0 == report.host }
            done += 1
            switch report.outcome {
            case .unchanged: break
            case .changed: changed += 1
            case .failed: failed += 1
            case .notAttempted: break
            }
            var line: String?
            if verbose, case .failed(let step, let message) = report.outcome {
                line = LineEventSink.format(host: report.host, step: step,
                                            message: "failed: \(message)")
            }
            redraw(at: now(), above: line, force: true)
        }
    }

    // MARK: - Drawing

    /// Redraws every half second so elapsed times move while hosts sit in a long step.
    public func start() {
        let timer = DispatchSource.makeTimerSource(queue: .global())
        timer.schedule(deadline: .now() + 0.5, repeating: 0.5)
        timer.setEventHandler { [weak self] in self?.tick() }
        lock.withLock { self.timer = timer }
        timer.resume()
    }

    /// Stops the ticker and erases the live lines, leaving the cursor where they began.
    public func stop() {
        lock.withLock {
            timer?.cancel()
            timer = nil
            stopped = true
            if drawnLines > 0 { write(erase(drawnLines)) }
            drawnLines = 0
        }
    }

    func tick() {
        lock.withLock { redraw(at: now(), above: nil, force: true) }
    }

    /// The lines of the live view at `time`, without cursor moves: the hosts in flight
    /// (oldest first) and the progress bar.
    public func frame(at time: Date? = nil) -> [String] {
        lock.withLock { render(at: time ?? now()) }
    }

    private func render(at time: Date) -> [String] {
        let width = max(20, columns()) - 1
        let nameWidth = min(order.map(\.count).max() ?? 0, 30)
        var lines: [String] = []
        for host in order.prefix(maxHostLines) {
            guard let flight = flights[host] else { continue }
            let elapsed = LiveEventSink.seconds(time.timeIntervalSince(flight.started))
            let text = "  " + host.padding(toLength: max(nameWidth, host.count),
                                           withPad: " ", startingAt: 0)
                + "  " + flight.step.rawValue.padding(toLength: 12, withPad: " ", startingAt: 0)
                + elapsed.leftPadded(to: 6) + "  " + flight.message
            lines.append(String(text.prefix(width)))
        }
        if order.count > maxHostLines {
            lines.append("  … and \(order.count - maxHostLines) more in flight")
        }
        lines.append(progressLine(at: time, width: width))
        return lines
    }

    private func progressLine(at time: Date, width: Int) -> String {
        let counts = "\(done)/\(total) hosts"
        var notes: [String] = []
        if changed > 0 { notes.append(paint("\(changed) changed", "33")) }
        if failed > 0 { notes.append(paint("\(failed) failed", "31")) }
        let plainNotes = [changed > 0 ? "\(changed) changed" : nil,
                          failed > 0 ? "\(failed) failed" : nil].compactMap { $0 }
        let elapsed = LiveEventSink.seconds(time.timeIntervalSince(began))
        func tail(_ notes: [String]) -> String {
            "  \(counts)" + (notes.isEmpty ? "" : " (" + notes.joined(separator: ", ") + ")")
                + "  " + elapsed
        }
        // The bar is sized by the uncoloured text: escape codes take no columns.
        let barWidth = max(10, min(40, width - tail(plainNotes).count - 2))
        let filled = total > 0 ? min(barWidth, barWidth * done / total) : barWidth
        let bar = "[" + String(repeating: "#", count: filled)
            + String(repeating: "-", count: barWidth - filled) + "]"
        return bar + tail(notes)
    }

    private func redraw(at time: Date, above line: String?, force: Bool) {
        guard !stopped else {
            if let line { write(line + "\n") }
            return
        }
        if !force, let lastDraw, time.timeIntervalSince(lastDraw) < minInterval { return }
        var out = drawnLines > 0 ? erase(drawnLines) : ""
        if let line { out += line + "\n" }
        let lines = render(at: time)
        out += lines.map { $0 + "\n" }.joined()
        write(out)
        drawnLines = lines.count
        lastDraw = time
    }

    /// Cursor up `lines` lines to column one, then clear to the end of the screen.
    private func erase(_ lines: Int) -> String {
        "\u{1B}[\(lines)A\r\u{1B}[J"
    }

    private func paint(_ text: String, _ code: String) -> String {
        color ? "\u{1B}[\(code)m\(text)\u{1B}[0m" : text
    }

    static func seconds(_ interval: TimeInterval) -> String {
        let value = max(0, interval)
        if value < 60 { return String(format: "%.1fs", value) }
        return "\(Int(value) / 60)m\(String(format: "%02d", Int(value) % 60))s"
    }

    // MARK: - The real terminal

    public static func terminalColumns() -> Int {
        var size = winsize()
        if ioctl(STDOUT_FILENO, UInt(TIOCGWINSZ), &size) == 0, size.ws_col > 0 {
            return Int(size.ws_col)
        }
        return 80
    }

    public static func writeStdout(_ text: String) {
        // Through stdio, like print(), so the final table comes out after the last frame.
        fputs(text, stdout)
        fflush(stdout)
    }
}

extension String {
    fileprivate func leftPadded(to width: Int) -> String {
        count >= width ? self : String(repeating: " ", count: width - count) + self
    }
}
