public enum BKFleetVersion { public static let string = "0.1.0" }
