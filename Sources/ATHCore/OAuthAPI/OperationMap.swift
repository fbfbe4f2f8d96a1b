/// Which scope admits which operation of a service behind the gateway: a list of routes, each a
/// method set, a path pattern and the scope it needs. A request no route covers is refused
/// (OPERATION_NOT_MAPPED), whatever its token holds: a grant reaches only what was described to
/// the user.
///
/// A route is written `METHODS PATTERN SCOPE`, e.g. `GET,HEAD /repos/*/issues/** repo`:
/// - METHODS: comma-separated, upper case, or `*` for any;
/// - PATTERN: `/`-separated segments, each a literal, `*` (exactly one segment) or, last only,
///   `**` (any number of segments, none included).
///
/// Paths are matched on their percent-decoded segments, and paths whose meaning an upstream
/// could read differently are refused before any matching (`segments(of:)`): dot segments, an
/// encoded `/` or `\`, empty segments, control characters. What is forwarded is then exactly
/// what was matched.
public struct OperationMap: Sendable, Equatable {
    public struct Route: Sendable, Equatable, CustomStringConvertible {
        /// nil: any method.
        public var methods: Set<String>?
        public var pattern: [Segment]
        public var scope: String

        public enum Segment: Sendable, Equatable {
            case literal(String)
            case one
            case rest
        }

        /// Parses `METHODS PATTERN SCOPE`; the error names what is wrong with the line.
        public init(parsing line: String) throws {
            // Printable ASCII only, split on ASCII spaces and tabs: Unicode whitespace and
            // combining marks would make a line read as other fields than it prints as.
            guard line.utf8.allSatisfy({ (0x20...0x7e).contains($0) || $0 == 0x09 }) else {
                throw OperationMap.invalid(line, "routes are printable ASCII (match other characters with *)")
            }
            let fields = line.utf8.split(whereSeparator: { $0 == 0x20 || $0 == 0x09 }).map { String(Substring($0)) }
            guard fields.count == 3 else { throw OperationMap.invalid(line, "expected 'METHODS /path/pattern scope'") }
            if fields[0] == "*" {
                methods = nil
            } else {
                let names = fields[0].split(separator: ",", omittingEmptySubsequences: false).map(String.init)
                guard names.allSatisfy({ !$0.isEmpty && $0.allSatisfy { $0.isASCII && ($0.isUppercase || $0 == "-") } }) else {
                    throw OperationMap.invalid(line, "methods must be upper-case names separated by commas, or *")
                }
                methods = Set(names)
            }
            guard fields[1].hasPrefix("/") else { throw OperationMap.invalid(line, "the path pattern must start with /") }
            let parts = fields[1].dropFirst().split(separator: "/", omittingEmptySubsequences: false).map(String.init)
            var pattern: [Segment] = []
            for (index, part) in parts.enumerated() {
                switch part {
                case "**":
                    guard index == parts.count - 1 else { throw OperationMap.invalid(line, "** may only end a pattern") }
                    pattern.append(.rest)
                case "*": pattern.append(.one)
                case "", ".", "..":
                    // "/" alone is the root: one empty segment, as `segments(of:)` reads it.
                    guard part.isEmpty, parts.count == 1 else { throw OperationMap.invalid(line, "empty or dot segments cannot match any request") }
                    pattern.append(.literal(""))
                default:
                    guard !part.contains("*") else { throw OperationMap.invalid(line, "* stands alone in a segment") }
                    pattern.append(.literal(part))
                }
            }
            self.pattern = pattern
            // RFC 6749 §3.3 scope-token: %x21 / %x23-5B / %x5D-7E.
            guard fields[2].utf8.allSatisfy({ $0 != 0x22 && $0 != 0x5c }) else {
                throw OperationMap.invalid(line, "a scope has no \" or \\ (RFC 6749 scope-token)")
            }
            scope = fields[2]
        }

        public func matches(method: String, segments: [String]) -> Bool {
            if let methods, !methods.contains(method) { return false }
            var i = 0
            for segment in pattern {
                switch segment {
                case .rest: return true
                case .one:
                    guard i < segments.count, !segments[i].isEmpty else { return false }
                case .literal(let text):
                    guard i < segments.count, segments[i] == text else { return false }
                }
                i += 1
            }
            return i == segments.count
        }

        public var description: String {
            let path = pattern.map { segment -> String in
                switch segment {
                case .literal(let text): text
                case .one: "*"
                case .rest: "**"
                }
            }
            return "\(methods.map { $0.sorted().joined(separator: ",") } ?? "*") /\(path.joined(separator: "/")) \(scope)"
        }
    }

    public var routes: [Route]

    public init(routes: [Route]) { self.routes = routes }

    public init(parsing lines: [String]) throws {
        routes = try lines.map(Route.init(parsing:))
    }

    /// The scopes, any one of which admits `method` on `path` (the path without its query);
    /// empty when no route covers it. Throws MALFORMED_MESSAGE for a path `segments(of:)` refuses.
    public func scopes(admitting method: String, path: String) throws -> Set<String> {
        let segments = try Self.segments(of: path)
        return Set(routes.lazy.filter { $0.matches(method: method, segments: segments) }.map(\.scope))
    }

    /// The first scope of `held` that admits the operation: OPERATION_NOT_MAPPED when no route
    /// covers it, SCOPE_INSUFFICIENT when routes do but need scopes not held.
    public func authorize(method: String, path: String, held: some Sequence<String>) throws -> String {
        let needed = try scopes(admitting: method, path: path)
        guard !needed.isEmpty else { throw ATHError(.operationNotMapped, "no route of this service covers \(method) \(path.prefix(256))") }
        guard let scope = held.first(where: needed.contains) else {
            throw ATHError(.scopeInsufficient, "\(method) \(path.prefix(256)) needs one of: \(needed.sorted().joined(separator: ", "))")
        }
        return scope
    }

    /// The percent-decoded segments of an absolute path, or MALFORMED_MESSAGE for a path that
    /// upstreams could resolve to another than the one matched: `.`/`..` (also encoded), an
    /// encoded `/` or `\`, a raw `\`, an empty segment (but for a trailing `/`), a control
    /// character, invalid percent-encoding or UTF-8.
    public static func segments(of path: String) throws -> [String] {
        func refuse(_ why: String) -> ATHError { ATHError(.malformedMessage, "request path \(why)") }
        guard path.hasPrefix("/") else { throw refuse("must start with /") }
        guard path.utf8.count <= 8192 else { throw refuse("is over 8192 bytes") }
        let raw = path.utf8.dropFirst().split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: false)
        var segments: [String] = []
        segments.reserveCapacity(raw.count)
        for (index, part) in raw.enumerated() {
            guard let decoded = percentDecoded(part) else { throw refuse("has invalid percent-encoding") }
            if decoded.isEmpty, index != raw.count - 1 { throw refuse("has an empty segment") }
            // `..;x` is `..` to servlet containers, which drop path parameters before resolving.
            let bare = decoded.prefix { $0 != ";" }
            if bare == "." || bare == ".." { throw refuse("has a dot segment") }
            if decoded.utf8.contains(where: { $0 < 0x20 || $0 == 0x7f || $0 == UInt8(ascii: "/") || $0 == UInt8(ascii: "\\") }) {
                throw refuse("has a slash, backslash or control character inside a segment")
            }
            segments.append(decoded)
        }
        return segments
    }

    private static func percentDecoded(_ part: Substring.UTF8View.SubSequence) -> String? {
        guard part.contains(UInt8(ascii: "%")) else { return String(Substring(part)) }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(part.count)
        var i = part.startIndex
        while i < part.endIndex {
            let byte = part[i]
            if byte == UInt8(ascii: "%") {
                let h = part.index(after: i)
                guard h < part.endIndex, part.index(after: h) < part.endIndex, let hi = hex(part[h]), let lo = hex(part[part.index(after: h)]) else {
                    return nil
                }
                bytes.append(hi << 4 | lo)
                i = part.index(h, offsetBy: 2)
            } else {
                bytes.append(byte)
                i = part.index(after: i)
            }
        }
        return String(validating: bytes, as: UTF8.self)
    }

    private static func hex(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): c - UInt8(ascii: "A") + 10
        default: nil
        }
    }

    static func invalid(_ line: String, _ why: String) -> ATHError {
        ATHError(.malformedMessage, "route '\(line.prefix(200))': \(why)")
    }
}
