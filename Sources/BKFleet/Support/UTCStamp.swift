// UTC time stamps for run ids, folder names, logs and events, formatted from the C
// library's calendar. Deliberately not DateFormatter or ISO8601DateFormatter: those load
// ICU's locale data, several MB of resident memory in every run (docs/performance.md).
// It formats only; it does not parse and knows no time zone but UTC.
import Foundation
#if canImport(Glibc)
import Glibc
#endif

enum UTCStamp {
    /// `20240131T235959`: sortable, and safe in file and systemd unit names.
    static func compact(_ date: Date = Date()) -> String {
        let t = fields(date)
        return pad(t.year, 4) + pad(t.month, 2) + pad(t.day, 2) + "T"
            + pad(t.hour, 2) + pad(t.minute, 2) + pad(t.second, 2)
    }

    /// `2024-01-31T23:59:59Z`, as ISO8601DateFormatter writes by default; with
    /// `fraction`, milliseconds too (`2024-01-31T23:59:59.123Z`).
    static func iso8601(_ date: Date = Date(), fraction: Bool = false) -> String {
        let t = fields(date)
        var text = pad(t.year, 4) + "-" + pad(t.month, 2) + "-" + pad(t.day, 2) + "T"
            + pad(t.hour, 2) + ":" + pad(t.minute, 2) + ":" + pad(t.second, 2)
        if fraction { text += "." + pad(t.millis, 3) }
        return text + "Z"
    }

    private static func fields(_ date: Date)
        -> (year: Int, month: Int, day: Int, hour: Int, minute: Int, second: Int, millis: Int) {
        // Whole milliseconds first: scaling before flooring absorbs the binary fraction's
        // error (x.05 s is stored as x.04999...). Floor, so times before 1970 go back too.
        let total = (date.timeIntervalSince1970 * 1000).rounded(.down)
        let whole = (total / 1000).rounded(.down)
        var seconds = time_t(whole)
        let millis = Int(total - whole * 1000)
        var parts = tm()
        gmtime_r(&seconds, &parts)
        return (Int(parts.tm_year) + 1900, Int(parts.tm_mon) + 1, Int(parts.tm_mday),
                Int(parts.tm_hour), Int(parts.tm_min), Int(parts.tm_sec), millis)
    }

    private static func pad(_ value: Int, _ width: Int) -> String {
        let digits = String(value)
        return digits.count >= width ? digits : String(repeating: "0", count: width - digits.count)
            + digits
    }
}
