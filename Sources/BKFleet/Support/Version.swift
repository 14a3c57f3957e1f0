// The version bkfleet reports (`bkfleet --version`, run records on hosts). Bumped by hand
// with each release; nothing derives it from git.
public enum BKFleetVersion { public static let string = "0.1.0" }
