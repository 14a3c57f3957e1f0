// swift-tools-version:6.0
// bkfleet: converge a fleet of NixOS Buildkite builders over SSH.
// C libraries come from Debian: libssh2, libcurl, OpenSSL's libcrypto and toml++.
import PackageDescription

let package = Package(
    name: "bkfleet",
    products: [
        .executable(name: "bkfleet", targets: ["bkfleet"]),
    ],
    targets: [
        .systemLibrary(name: "CLibSSH2", pkgConfig: "libssh2",
                       providers: [.apt(["libssh2-1-dev"])]),
        // libcurl is loaded at run time, on first use (Sources/CCurl/shim.h): headers only.
        .systemLibrary(name: "CCurl", providers: [.apt(["libcurl4-openssl-dev"])]),
        .systemLibrary(name: "CCrypto", pkgConfig: "libcrypto",
                       providers: [.apt(["libssl-dev"])]),
        .target(
            name: "CTOML",
            cxxSettings: [.define("TOML_HEADER_ONLY", to: "0"),
                          .define("TOML_SHARED_LIB", to: "1"),
                          .define("TOML_EXCEPTIONS", to: "1")],
            linkerSettings: [.linkedLibrary("tomlplusplus")]
        ),
        .target(
            name: "BKFleet",
            dependencies: ["CLibSSH2", "CCurl", "CCrypto", "CTOML"]
        ),
        .executableTarget(name: "bkfleet", dependencies: ["BKFleet"]),
        .testTarget(name: "BKFleetTests", dependencies: ["BKFleet"]),
        .testTarget(name: "FleetTests", dependencies: ["BKFleet"]),
    ],
    swiftLanguageModes: [.v5],
    cxxLanguageStandard: .cxx17
)
