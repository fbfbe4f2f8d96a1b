import Foundation

/// The limits a grant carries (step 8), as the server enforces them on every API request.
///
/// Wire forms: `rate_limit` "N/second|minute|hour|day"; `order_amount_limit` a number, compared
/// with the amount the application reports for a request; `ip_whitelist` IPv4/IPv6 CIDRs or
/// addresses; `access_time` "HH:MM-HH:MM" optionally followed by a space and an IANA zone or
/// UTC offset ("09:00-18:00 Europe/Paris"), UTC when absent. A window whose end is before its
/// start wraps past midnight.
public struct Restrictions: Codable, Sendable, Equatable {
    public var ip_whitelist: [String]?
    public var rate_limit: String?
    public var order_amount_limit: Double?
    public var access_time: String?

    public init(ip_whitelist: [String]? = nil, rate_limit: String? = nil, order_amount_limit: Double? = nil, access_time: String? = nil) {
        self.ip_whitelist = ip_whitelist
        self.rate_limit = rate_limit
        self.order_amount_limit = order_amount_limit
        self.access_time = access_time
    }

    /// Checks every field parses; a server refuses to start with a policy that does not.
    public func validated() throws -> Restrictions {
        _ = try CompiledRestrictions(self)
        return self
    }

    public func checkAmount(_ amount: Double) throws {
        guard amount.isFinite, amount >= 0 else {
            throw ATHError(.malformedMessage, "amount must be a non-negative number")
        }
        if let limit = order_amount_limit, amount > limit {
            // Numbers as JSON writes them (5999, not 5999.0): the message quotes the request.
            let (a, l) = ((try? CanonicalJSON.number(amount)) ?? "\(amount)", (try? CanonicalJSON.number(limit)) ?? "\(limit)")
            throw ATHError(.amountLimitExceeded, "amount \(a) exceeds this grant's limit of \(l)")
        }
    }
}

/// Restrictions parsed once per grant: the access check runs on every request and should not
/// parse CIDR blocks, windows and time zones again each time.
public struct CompiledRestrictions: Sendable {
    public let restrictions: Restrictions
    public let rateLimit: RateLimit?
    let ranges: [IPRange]?
    let window: AccessTimeWindow?

    public init(_ restrictions: Restrictions) throws {
        self.restrictions = restrictions
        rateLimit = try restrictions.rate_limit.map(RateLimit.init(parsing:))
        ranges = try restrictions.ip_whitelist?.map(IPRange.init(parsing:))
        window = try restrictions.access_time.map(AccessTimeWindow.init(parsing:))
        if let limit = restrictions.order_amount_limit, !(limit.isFinite && limit >= 0) {
            throw ATHError(.malformedMessage, "order_amount_limit must be a non-negative number")
        }
    }

    /// The checks that need only the request's address and time; rate and amount are stateful
    /// or application-supplied and are checked by their owners.
    /// `address` is evaluated only when the grant restricts addresses.
    public func checkRequest(from address: @autoclosure () -> String?, at date: Date) throws {
        if let ranges {
            let address = address()
            guard let address, let ip = IPAddress(address), ranges.contains(where: { $0.contains(ip) }) else {
                throw ATHError(.ipNotAllowed, "requests from \(address ?? "an unknown address") are not allowed by this grant")
            }
        }
        if let window, !window.contains(date) {
            throw ATHError(.outsideAccessTime, "this grant allows access only during \(restrictions.access_time ?? "")")
        }
    }
}

/// "100/minute": at most `count` requests in any window of `window` seconds.
public struct RateLimit: Sendable, Equatable {
    public var count: Int
    public var window: Int

    public init(count: Int, window: Int) {
        self.count = count
        self.window = window
    }

    public init(parsing text: String) throws {
        let parts = text.split(separator: "/")
        let units = ["second": 1, "minute": 60, "hour": 3600, "day": 86400]
        guard parts.count == 2, let n = Int(parts[0]), n > 0, let w = units[String(parts[1])] else {
            throw ATHError(.malformedMessage, "rate_limit '\(text)' is not N/second|minute|hour|day")
        }
        count = n
        window = w
    }

    public var perSecond: Double { Double(count) / Double(window) }
}

/// An IPv4 or IPv6 address as bytes (IPv4-mapped IPv6 addresses compare as IPv4).
public struct IPAddress: Sendable, Equatable {
    public var bytes: [UInt8]

    public init?(_ text: String) {
        var t = text
        if t.hasPrefix("[") && t.hasSuffix("]") { t = String(t.dropFirst().dropLast()) }
        if let zone = t.firstIndex(of: "%") { t = String(t[..<zone]) }
        if let v4 = Self.parseV4(t) {
            bytes = v4
        } else if let v6 = Self.parseV6(t) {
            if v6.prefix(10).allSatisfy({ $0 == 0 }) && v6[10] == 0xFF && v6[11] == 0xFF {
                bytes = Array(v6.suffix(4))
            } else {
                bytes = v6
            }
        } else {
            return nil
        }
    }

    static func parseV4(_ t: String) -> [UInt8]? {
        let parts = t.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 4 else { return nil }
        var out: [UInt8] = []
        for p in parts {
            guard !p.isEmpty, p.count <= 3, p.allSatisfy(\.isASCII), let v = UInt8(p), p == "0" || !p.hasPrefix("0") else { return nil }
            out.append(v)
        }
        return out
    }

    static func parseV6(_ t: String) -> [UInt8]? {
        guard t.contains(":") else { return nil }
        var text = t
        // A trailing dotted IPv4 part ("::ffff:192.0.2.1") stands for the last two groups.
        if let lastColon = text.lastIndex(of: ":"), text[text.index(after: lastColon)...].contains(".") {
            guard let v4 = parseV4(String(text[text.index(after: lastColon)...])) else { return nil }
            let hi = UInt16(v4[0]) << 8 | UInt16(v4[1])
            let lo = UInt16(v4[2]) << 8 | UInt16(v4[3])
            text = String(text[...lastColon]) + String(hi, radix: 16) + ":" + String(lo, radix: 16)
        }
        let halves = text.components(separatedBy: "::")
        guard halves.count <= 2 else { return nil }
        func groups(_ s: String) -> [UInt16]? {
            if s.isEmpty { return [] }
            var out: [UInt16] = []
            for g in s.split(separator: ":", omittingEmptySubsequences: false) {
                guard (1...4).contains(g.count), let v = UInt16(g, radix: 16) else { return nil }
                out.append(v)
            }
            return out
        }
        guard let head = groups(halves[0]) else { return nil }
        var all: [UInt16]
        if halves.count == 2 {
            guard let rest = groups(halves[1]), head.count + rest.count < 8 else { return nil }
            all = head + [UInt16](repeating: 0, count: 8 - head.count - rest.count) + rest
        } else {
            guard head.count == 8 else { return nil }
            all = head
        }
        return all.flatMap { [UInt8($0 >> 8), UInt8($0 & 0xFF)] }
    }
}

/// A CIDR block ("10.0.0.0/8", "2001:db8::/32") or a single address.
public struct IPRange: Sendable, Equatable {
    public var network: IPAddress
    public var prefix: Int

    public init(parsing text: String) throws {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard (1...2).contains(parts.count), let address = IPAddress(String(parts[0])) else {
            throw ATHError(.malformedMessage, "ip_whitelist entry '\(text)' is not an address or CIDR block")
        }
        let bits = address.bytes.count * 8
        if parts.count == 2 {
            guard let p = Int(parts[1]), (0...bits).contains(p) else {
                throw ATHError(.malformedMessage, "ip_whitelist entry '\(text)' has a bad prefix length")
            }
            prefix = p
        } else {
            prefix = bits
        }
        network = address
    }

    public func contains(_ ip: IPAddress) -> Bool {
        guard ip.bytes.count == network.bytes.count else { return false }
        var remaining = prefix
        for i in network.bytes.indices where remaining > 0 {
            let take = min(8, remaining)
            let mask = UInt8(truncatingIfNeeded: 0xFF << (8 - take))
            if ip.bytes[i] & mask != network.bytes[i] & mask { return false }
            remaining -= take
        }
        return true
    }
}

/// "09:00-18:00 Europe/Paris": a daily window in a time zone (UTC when none is given).
public struct AccessTimeWindow: Sendable, Equatable {
    public var start: Int
    public var end: Int
    public var timeZone: TimeZone { calendar.timeZone }
    let calendar: Calendar

    public init(parsing text: String) throws {
        let bad = ATHError(.malformedMessage, "access_time '\(text)' is not HH:MM-HH:MM [zone]")
        let parts = text.split(separator: " ", omittingEmptySubsequences: true)
        guard (1...2).contains(parts.count) else { throw bad }
        let range = parts[0].split(separator: "-")
        func minutes(_ s: Substring) -> Int? {
            let hm = s.split(separator: ":")
            guard hm.count == 2, hm[1].count == 2, (1...2).contains(hm[0].count), let h = Int(hm[0]), let m = Int(hm[1]),
                (0...24).contains(h), (0...59).contains(m), h * 60 + m <= 1440
            else { return nil }
            return h * 60 + m
        }
        guard range.count == 2, let s = minutes(range[0]), let e = minutes(range[1]), s != e else { throw bad }
        start = s
        end = e
        var calendar = Calendar(identifier: .gregorian)
        if parts.count == 2 {
            guard let zone = Self.zone(String(parts[1])) else {
                throw ATHError(.malformedMessage, "access_time zone '\(parts[1])' is unknown")
            }
            calendar.timeZone = zone
        } else {
            calendar.timeZone = TimeZone(identifier: "UTC")!
        }
        self.calendar = calendar
    }

    static func zone(_ name: String) -> TimeZone? {
        if name == "UTC" || name == "Z" { return TimeZone(identifier: "UTC") }
        if let sign = name.first, sign == "+" || sign == "-" {
            let digits = name.dropFirst().replacingOccurrences(of: ":", with: "")
            guard digits.count == 4, let h = Int(digits.prefix(2)), let m = Int(digits.suffix(2)), h <= 14, m < 60 else { return nil }
            return TimeZone(secondsFromGMT: (sign == "-" ? -1 : 1) * (h * 3600 + m * 60))
        }
        return TimeZone(identifier: name)
    }

    public func contains(_ date: Date) -> Bool {
        let c = calendar.dateComponents([.hour, .minute], from: date)
        let now = (c.hour ?? 0) * 60 + (c.minute ?? 0)
        return start < end ? (now >= start && now < end) : (now >= start || now < end)
    }
}
