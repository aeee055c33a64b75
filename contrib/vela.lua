-- Wireshark dissector for VELA, the Virtual Ethernet Link Application (wire protocol v2, and v1).
--
-- The byte layout follows src/wire.ts (encode() and decodeBody()) and src/datapath/aead_stage.ts (sealed
-- data frames); docs/PROTOCOL.md describes it. Tested with Wireshark/TShark 4.0.
--
-- Use:
--   tshark -X lua_script:/path/to/contrib/vela.lua -r capture.pcap
--   wireshark -X lua_script:/path/to/contrib/vela.lua
-- or copy this file into the personal Lua plugins folder (Help > About Wireshark > Folders).
--
-- Every UDP datagram on the VELA port (4455 unless changed in the preferences) starts with one byte:
--   1..255  data on circuit `vid` = that byte, followed by one Ethernet frame without FCS (tap mode)
--           or one IP packet (tun mode), in clear (a circuit without a key, or with --cipher clear), or
--           sealed by the circuit's data key: 1 byte key epoch, the low 32 bits of the packet counter
--           (big endian), the encrypted frame, a 16-byte tag
--   0       a control message: an 8-byte header, the body, and a 16-byte MAC when flags bit 0 is set
--
-- Control messages of version 2 are decoded with the v2 layouts, those of version 1 (an older peer, and
-- the NAK a v2 daemon answers a v1 IREQ with) with the v1 layouts; any other version gets an expert info
-- and its body is shown undecoded.
--
-- A data frame does not say whether it is sealed, and a sealed frame cannot be decrypted here. The
-- preference "Sealed data frames" chooses: in "auto" a circuit whose IACK or IRDY is in the capture (same
-- addresses and ports, same vid, an earlier frame) is sealed unless that message named the clear cipher
-- (version 1 had no ciphers: clear); without one, a payload that looks like the frame the circuit carries
-- is decoded in clear, and anything else of at least 22 bytes (1 + 4 + 16 + 1) is shown as a sealed frame
-- (epoch, counter, encrypted length, tag). "clear" and "sealed" decide for every frame.
-- A clear payload is handed to "eth_withoutfcs", "ip" or "ipv6". The preference "Data payload" chooses;
-- in "auto" a payload whose first nibble is 4 (6) and whose IPv4 total length (IPv6 40 + payload length)
-- equals the payload's length is an IP packet, anything else an Ethernet frame. A payload "looks like" an
-- Ethernet frame when it has a unicast source address and a common EtherType (or an 802.3 length that
-- matches). From the command line:
--   tshark -o vela.payload:tun ...   (auto, tap or tun)      tshark -o vela.port:4456 ...
--   tshark -o vela.sealed:clear ...  (auto, clear or sealed)
--
-- A malformed datagram gets an expert info; the dissector never raises a Lua error.

local vela = Proto("vela", "VELA L2 tunnel (Virtual Ethernet Link Application)")

local DEFAULT_PORT = 4455
local HEADER_LENGTH = 8
local MAC_LENGTH = 16
local FLAG_MAC = 0x01
local PROTOCOL_VERSION = 2
local OLD_PROTOCOL_VERSION = 1
local EPHEMERAL_LENGTH = 32
local MAX_CONTROL_LENGTH = 512
local MAX_PLAN_ADDRESSES = 4
local MAX_NAK_TEXT = 200

local CODE = { NOP = 0, IREQ = 1, IACK = 2, ICON = 3, CREQ = 4, KEEPALIVE = 5, IRDY = 6, NAK = 7 }
local code_names = {
    [0] = "NOP",
    [1] = "IREQ",
    [2] = "IACK",
    [3] = "ICON",
    [4] = "CREQ",
    [5] = "KEEPALIVE",
    [6] = "IRDY",
    [7] = "NAK",
}
local code_descriptions = {
    [0] = "NOP (ignored)",
    [1] = "IREQ (session initialization request)",
    [2] = "IACK (session acknowledgement)",
    [3] = "ICON (confirmation)",
    [4] = "CREQ (closure request)",
    [5] = "KEEPALIVE",
    [6] = "IRDY (already established)",
    [7] = "NAK (refusal)",
}
-- Body lengths of the fixed-size messages by version; IREQ adds its plan, NAK its text, NOP may carry padding.
local FIXED_BODY = {
    [1] = { [1] = 24, [2] = 24, [3] = 16, [4] = 16, [5] = 32, [6] = 24, [7] = 10 },
    [2] = { [1] = 56, [2] = 56, [3] = 24, [4] = 16, [5] = 40, [6] = 56, [7] = 10 },
}

-- A sealed data frame (src/datapath/aead_stage.ts): after the vid byte, the key epoch, the counter's low
-- 32 bits, at least one byte of encrypted frame, the tag.
local SEALED_EPOCH_LENGTH = 1
local SEALED_COUNTER_LENGTH = 4
local SEALED_HEADER = SEALED_EPOCH_LENGTH + SEALED_COUNTER_LENGTH
local TAG_LENGTH = 16
local MIN_SEALED = SEALED_HEADER + TAG_LENGTH + 1

local mode_names = { [1] = "tap", [2] = "tun" }
local family_names = { [4] = "IPv4", [6] = "IPv6" }
local nak_reasons = {
    [0] = "UNSPECIFIED",
    [1] = "NOT_ALLOWED",
    [2] = "VID_IN_USE",
    [3] = "MODE_MISMATCH",
    [4] = "BAD_PLAN",
    [5] = "DEVICE_FAILED",
    [6] = "BAD_KEY",
    [7] = "MTU_TOO_SMALL",
    [8] = "CIPHER_MISMATCH",
    [9] = "UPGRADE",
    [10] = "CIRCUIT_LIMIT",
}
-- The data cipher (IACK and IRDY name one; an IREQ offers a bitmask of 1 << code).
local CIPHER = { CLEAR = 0, AES_256_GCM = 1, CHACHA20_POLY1305 = 2 }
local cipher_names = { [0] = "clear", [1] = "aes-256-gcm", [2] = "chacha20-poly1305" }
local IREQ_FLAG_AES = 0x01

local f = {
    vid = ProtoField.uint8("vela.vid", "Circuit (vid)", base.DEC),
    kind = ProtoField.string("vela.kind", "Kind"),
    code = ProtoField.uint8("vela.code", "VC code", base.DEC, code_descriptions),
    version = ProtoField.uint8("vela.version", "Version", base.DEC),
    body_length = ProtoField.uint16("vela.body_length", "Body length", base.DEC),
    flags = ProtoField.uint8("vela.flags", "Flags", base.HEX),
    flags_mac = ProtoField.bool("vela.flags.mac", "MAC follows the body", 8, nil, FLAG_MAC),
    reserved = ProtoField.bytes("vela.reserved", "Reserved"),
    mac = ProtoField.bytes("vela.mac", "MAC"),
    padding = ProtoField.bytes("vela.padding", "Padding"),
    payload = ProtoField.bytes("vela.payload", "Payload"),
    ireq_initiator_nonce = ProtoField.uint64("vela.ireq.initiator_nonce", "Initiator nonce", base.HEX),
    ireq_timestamp = ProtoField.uint64("vela.ireq.timestamp", "Timestamp (ms since the Unix epoch)", base.DEC),
    mode = ProtoField.uint8("vela.mode", "Mode", base.DEC, mode_names),
    plan_count = ProtoField.uint8("vela.plan.count", "Plan count", base.DEC),
    mtu = ProtoField.uint16("vela.mtu", "MTU", base.DEC),
    options = ProtoField.uint16("vela.options", "Options (version 1)", base.HEX),
    handshake = ProtoField.uint8("vela.handshake", "Handshake (key epoch)", base.DEC),
    offers = ProtoField.uint8("vela.offers", "Offered ciphers", base.HEX),
    offers_clear = ProtoField.bool("vela.offers.clear", "clear", 8, nil, bit.lshift(1, CIPHER.CLEAR)),
    offers_aes = ProtoField.bool("vela.offers.aes_256_gcm", "aes-256-gcm", 8, nil,
        bit.lshift(1, CIPHER.AES_256_GCM)),
    offers_chacha = ProtoField.bool("vela.offers.chacha20_poly1305", "chacha20-poly1305", 8, nil,
        bit.lshift(1, CIPHER.CHACHA20_POLY1305)),
    ireq_flags = ProtoField.uint8("vela.ireq_flags", "IREQ flags", base.HEX),
    ireq_flags_aes = ProtoField.bool("vela.ireq_flags.aes", "The initiator has AES instructions", 8, nil,
        IREQ_FLAG_AES),
    ephemeral = ProtoField.bytes("vela.ephemeral", "Ephemeral X25519 public key"),
    cipher = ProtoField.uint8("vela.cipher", "Cipher", base.DEC, cipher_names),
    plan = ProtoField.bytes("vela.plan", "Plan entry"),
    plan_family = ProtoField.uint8("vela.plan.family", "Family", base.DEC, family_names),
    plan_prefix_length = ProtoField.uint8("vela.plan.prefix_length", "Prefix length", base.DEC),
    plan_ipv4 = ProtoField.ipv4("vela.plan.ipv4", "Address"),
    plan_ipv6 = ProtoField.ipv6("vela.plan.ipv6", "Address"),
    plan_unknown = ProtoField.bytes("vela.plan.unknown", "Unparsed plan bytes"),
    responder_nonce = ProtoField.uint64("vela.responder_nonce", "Responder nonce", base.HEX),
    initiator_nonce = ProtoField.uint64("vela.initiator_nonce", "Initiator nonce", base.HEX),
    sender_nonce = ProtoField.uint64("vela.sender_nonce", "Sender nonce", base.HEX),
    receiver_nonce = ProtoField.uint64("vela.receiver_nonce", "Receiver nonce", base.HEX),
    keepalive_sent_at = ProtoField.uint64("vela.keepalive.sent_at", "Sent at (sender's monotonic ms)", base.DEC),
    keepalive_echo = ProtoField.uint64("vela.keepalive.echo", "Echo", base.DEC),
    keepalive_sequence = ProtoField.uint64("vela.keepalive_sequence", "Sequence", base.DEC),
    nak_reason = ProtoField.uint8("vela.nak.reason", "Reason", base.DEC, nak_reasons),
    nak_text_length = ProtoField.uint8("vela.nak.text_length", "Text length", base.DEC),
    nak_text = ProtoField.string("vela.nak.text", "Text", base.UNICODE),
    trailing = ProtoField.bytes("vela.trailing", "Bytes past the end"),
    sealed = ProtoField.bytes("vela.sealed", "Sealed frame (encrypted)"),
    sealed_epoch = ProtoField.uint8("vela.sealed.epoch", "Key epoch", base.DEC),
    sealed_counter = ProtoField.uint32("vela.sealed.counter", "Counter (low 32 bits)", base.DEC),
    sealed_ciphertext = ProtoField.bytes("vela.sealed.ciphertext", "Encrypted frame"),
    sealed_length = ProtoField.uint32("vela.sealed.length", "Encrypted frame length", base.DEC),
    sealed_tag = ProtoField.bytes("vela.sealed.tag", "Authentication tag"),
}
vela.fields = {
    f.vid, f.kind, f.code, f.version, f.body_length, f.flags, f.flags_mac, f.reserved, f.mac, f.padding,
    f.payload, f.ireq_initiator_nonce, f.ireq_timestamp, f.mode, f.plan_count, f.mtu, f.options, f.plan,
    f.plan_family, f.plan_prefix_length, f.plan_ipv4, f.plan_ipv6, f.plan_unknown, f.responder_nonce,
    f.initiator_nonce, f.sender_nonce, f.receiver_nonce, f.keepalive_sent_at, f.keepalive_echo,
    f.nak_reason, f.nak_text_length, f.nak_text, f.trailing, f.handshake, f.offers, f.offers_clear,
    f.offers_aes, f.offers_chacha, f.ireq_flags, f.ireq_flags_aes, f.ephemeral, f.cipher,
    f.keepalive_sequence, f.sealed, f.sealed_epoch, f.sealed_counter, f.sealed_ciphertext, f.sealed_length,
    f.sealed_tag,
}

local ef = {
    malformed = ProtoExpert.new("vela.malformed", "Malformed VELA datagram", expert.group.MALFORMED,
        expert.severity.ERROR),
    truncated = ProtoExpert.new("vela.truncated", "Truncated VELA datagram", expert.group.MALFORMED,
        expert.severity.ERROR),
    bad_version = ProtoExpert.new("vela.bad_version", "Unsupported VELA protocol version",
        expert.group.PROTOCOL, expert.severity.ERROR),
    old_version = ProtoExpert.new("vela.old_version", "VELA protocol version 1 (an older peer)",
        expert.group.PROTOCOL, expert.severity.NOTE),
    unknown_code = ProtoExpert.new("vela.unknown_code", "Unknown VC code", expert.group.PROTOCOL,
        expert.severity.ERROR),
    bad_length = ProtoExpert.new("vela.bad_length", "Datagram length does not match the header",
        expert.group.MALFORMED, expert.severity.ERROR),
    bad_field = ProtoExpert.new("vela.bad_field", "Invalid field value", expert.group.PROTOCOL,
        expert.severity.WARN),
    runt = ProtoExpert.new("vela.runt", "Data datagram without a frame (runt)", expert.group.MALFORMED,
        expert.severity.WARN),
    inner = ProtoExpert.new("vela.inner_malformed", "The carried frame did not dissect",
        expert.group.MALFORMED, expert.severity.WARN),
    lua = ProtoExpert.new("vela.dissector_error", "VELA dissector error", expert.group.MALFORMED,
        expert.severity.ERROR),
}
vela.experts = {
    ef.malformed, ef.truncated, ef.bad_version, ef.old_version, ef.unknown_code, ef.bad_length, ef.bad_field, ef.runt,
    ef.inner, ef.lua,
}

-- Preferences.
local PAYLOAD_AUTO, PAYLOAD_TAP, PAYLOAD_TUN = 0, 1, 2
vela.prefs.port = Pref.uint("UDP port", DEFAULT_PORT, "The UDP port VELA runs on (vela --port, default 4455)")
vela.prefs.payload = Pref.enum("Data payload", PAYLOAD_AUTO,
    "How data datagrams are decoded: auto (an IP packet when the version nibble and the IP length match, "
        .. "otherwise Ethernet), always Ethernet (tap mode), or always IP (tun mode)",
    {
        { "auto", "Auto (guess tap or tun per packet)", PAYLOAD_AUTO },
        { "tap", "Ethernet frame (tap mode)", PAYLOAD_TAP },
        { "tun", "IP packet (tun mode)", PAYLOAD_TUN },
    }, false)
local SEALED_AUTO, SEALED_CLEAR, SEALED_ALWAYS = 0, 1, 2
vela.prefs.sealed = Pref.enum("Sealed data frames", SEALED_AUTO,
    "Whether data frames are sealed (a circuit with a key and a cipher) or clear: auto (as the circuit's "
        .. "IACK or IRDY in the capture says; without one, clear when the payload looks like the frame the "
        .. "circuit carries, as the preference Data payload says, otherwise sealed when it has at least 22 "
        .. "bytes), always clear, or always sealed",
    {
        { "auto", "Auto (guess per packet)", SEALED_AUTO },
        { "clear", "Clear (circuits without encryption)", SEALED_CLEAR },
        { "sealed", "Sealed (encrypted circuits)", SEALED_ALWAYS },
    }, false)

local udp_table = DissectorTable.get("udp.port")
local registered_port = DEFAULT_PORT

function vela.prefs_changed()
    local port = vela.prefs.port
    if port ~= registered_port then
        if registered_port ~= 0 then udp_table:remove(registered_port, vela) end
        if port ~= 0 then udp_table:add(port, vela) end
        registered_port = port
    end
end

-- Inner dissectors, looked up when first needed (pcall: a missing one must not break loading).
local inner_dissectors = {}
local function inner(name)
    if inner_dissectors[name] == nil then
        local ok, d = pcall(Dissector.get, name)
        inner_dissectors[name] = ok and d or false
    end
    return inner_dissectors[name] or nil
end

-- The cipher of each circuit, learned from the IACKs and IRDYs of the capture: by "endpoints vid", a list of
-- { frame, cipher, name } in frame order (the first pass dissects in order). A data frame takes the latest one
-- before it; without one the auto heuristic decides.
local circuits = {}

function vela.init()
    circuits = {}
end

local function circuit_key(pinfo, vid)
    local a = tostring(pinfo.src) .. "/" .. tostring(pinfo.src_port)
    local b = tostring(pinfo.dst) .. "/" .. tostring(pinfo.dst_port)
    if a > b then a, b = b, a end
    return a .. " " .. b .. " " .. vid
end

local function learn_cipher(pinfo, vid, cipher, name)
    if pinfo.visited then return end
    local key = circuit_key(pinfo, vid)
    local list = circuits[key]
    if not list then
        list = {}
        circuits[key] = list
    end
    list[#list + 1] = { frame = pinfo.number, cipher = cipher, name = name }
end

local function learned_cipher(pinfo, vid)
    local list = circuits[circuit_key(pinfo, vid)]
    local found
    for _, entry in ipairs(list or {}) do
        if entry.frame >= pinfo.number then break end
        found = entry
    end
    return found
end

-- Helpers -------------------------------------------------------------------------------------------

local function u64_text(range)
    local ok, value = pcall(function() return range:uint64() end)
    return ok and tostring(value) or "?"
end

-- "2025-10-20T05:03:11.360Z" for milliseconds since the epoch given as a UInt64.
local function utc_text(range)
    local ok, text = pcall(function()
        local ms = range:uint64()
        local seconds = (ms / 1000):tonumber()
        local millis = (ms % 1000):tonumber()
        if seconds > 253402300799 then return nil end -- past year 9999
        return os.date("!%Y-%m-%dT%H:%M:%S", seconds) .. string.format(".%03dZ", millis)
    end)
    return ok and text or nil
end

-- A cursor over the body that checks each field against the bytes captured before reading it.
local Reader = {}
Reader.__index = Reader

local function reader(tvb, tree, offset, limit)
    return setmetatable({ tvb = tvb, tree = tree, at = offset, limit = limit, short = false }, Reader)
end

-- Whether `n` more bytes are there; marks the body truncated once when they are not.
function Reader:has(n, what)
    if not self.short and self.at + n <= self.limit then return true end
    if not self.short then
        self.short = true
        self.tree:add_proto_expert_info(ef.truncated, string.format("Body ends before %s (%d of %d bytes)",
            what, math.max(self.limit - self.at, 0), n))
    end
    return false
end

-- Adds field `field` of `n` bytes; returns the TvbRange and the tree item, or nil.
function Reader:field(field, n, what, tree)
    if not self:has(n, what) then return nil end
    local range = self.tvb(self.at, n)
    local item = (tree or self.tree):add(field, range)
    self.at = self.at + n
    return range, item
end

function Reader:reserved(n, tree)
    local range, item = self:field(f.reserved, n, "the reserved bytes", tree)
    if range and range:bytes():tohex():find("[^0]") then
        item:add_proto_expert_info(ef.bad_field, "Reserved bytes are not zero")
    end
end

-- Control bodies ----------------------------------------------------------------------------------

local function plan_entries(r, count, summary)
    for i = 1, count do
        if not r:has(2, string.format("plan entry %d", i)) then return end
        local family = r.tvb(r.at, 1):uint()
        local size = family == 4 and 4 or family == 6 and 16 or 0
        local length = math.min(2 + size, r.limit - r.at)
        local entry = r.tree:add(f.plan, r.tvb(r.at, length))
        entry:set_text(string.format("Plan entry %d", i))
        local _, family_item = r:field(f.plan_family, 1, "the family", entry)
        local prefix_range, prefix_item = r:field(f.plan_prefix_length, 1, "the prefix length", entry)
        if not prefix_range then return end
        local prefix = prefix_range:uint()
        if size == 0 then
            family_item:add_proto_expert_info(ef.bad_field, string.format("Address family %d (not 4 or 6)", family))
            entry:append_text(string.format(": family %d", family))
            -- The entry's size is unknown: the rest of the plan cannot be parsed.
            if r.at < r.limit then
                r.tree:add(f.plan_unknown, r.tvb(r.at, r.limit - r.at))
                r.at = r.limit
            end
            return
        end
        if prefix > size * 8 then
            prefix_item:add_proto_expert_info(ef.bad_field,
                string.format("Prefix length %d is over %d", prefix, size * 8))
        end
        local address_range = r:field(family == 4 and f.plan_ipv4 or f.plan_ipv6, size, "the address", entry)
        if not address_range then return end
        local ok, address = pcall(function()
            return tostring(family == 4 and address_range:ipv4() or address_range:ipv6())
        end)
        local text = string.format("%s/%d", ok and address or "?", prefix)
        entry:append_text(": " .. text)
        summary[#summary + 1] = text
    end
end

-- Mode byte of IREQ, IACK and IRDY: adds "tap" or "tun" to the info, an expert info when it is neither.
local function mode_info(mode_range, mode_item, info)
    if not mode_range then return end
    local mode = mode_range:uint()
    info[#info + 1] = mode_names[mode] or string.format("mode %d", mode)
    if not mode_names[mode] then
        mode_item:add_proto_expert_info(ef.bad_field, string.format("Mode %d (not 1 tap or 2 tun)", mode))
    end
end

local function timestamp_field(r)
    local ts_range, ts_item = r:field(f.ireq_timestamp, 8, "the timestamp")
    if ts_range then
        local utc = utc_text(ts_range)
        if utc then ts_item:append_text(" (" .. utc .. ")") end
    end
end

local function plan_field(r, count_range, count_item, info)
    if not count_range then return end
    local count = count_range:uint()
    if count > MAX_PLAN_ADDRESSES then
        count_item:add_proto_expert_info(ef.bad_field,
            string.format("Plan of %d addresses, at most %d are allowed", count, MAX_PLAN_ADDRESSES))
    end
    local summary = {}
    plan_entries(r, count, summary)
    if #summary > 0 then info[#info + 1] = "plan " .. table.concat(summary, " ") end
end

local function handshake_field(r, info)
    local range = r:field(f.handshake, 1, "the handshake")
    if range then info[#info + 1] = "handshake " .. range:uint() end
end

-- The 32-byte X25519 public key of IREQ, IACK and IRDY; all zero is none (a circuit without a key).
local function ephemeral_field(r)
    local range, item = r:field(f.ephemeral, EPHEMERAL_LENGTH, "the ephemeral key")
    if range and not range:bytes():tohex():find("[^0]") then
        item:append_text(" (none: no pre-shared key)")
    end
end

-- The names of the ciphers a bitmask offers, in code order.
local function offered(offers)
    local names = {}
    for code = 0, 7 do
        if bit.band(offers, bit.lshift(1, code)) ~= 0 then
            names[#names + 1] = cipher_names[code] or string.format("cipher %d", code)
        end
    end
    return names
end

-- Version 1 (src/wire.ts before v2): the layouts an older peer sends.

local function body_ireq_v1(r, info)
    r:field(f.ireq_initiator_nonce, 8, "the initiator nonce")
    timestamp_field(r)
    local mode_range, mode_item = r:field(f.mode, 1, "the mode")
    local count_range, count_item = r:field(f.plan_count, 1, "the plan count")
    local mtu_range = r:field(f.mtu, 2, "the MTU")
    r:field(f.options, 2, "the options")
    r:reserved(2)
    if mtu_range then info[#info + 1] = "MTU " .. mtu_range:uint() end
    mode_info(mode_range, mode_item, info)
    plan_field(r, count_range, count_item, info)
end

local function body_ack_v1(r, info)
    r:field(f.responder_nonce, 8, "the responder nonce")
    r:field(f.initiator_nonce, 8, "the initiator nonce")
    local mtu_range = r:field(f.mtu, 2, "the MTU")
    local mode_range, mode_item = r:field(f.mode, 1, "the mode")
    r:reserved(1)
    r:field(f.options, 2, "the options")
    r:reserved(2)
    if mtu_range then info[#info + 1] = "MTU " .. mtu_range:uint() end
    mode_info(mode_range, mode_item, info)
end

local function body_icon_v1(r)
    r:field(f.initiator_nonce, 8, "the initiator nonce")
    r:field(f.responder_nonce, 8, "the responder nonce")
end

local function body_creq(r)
    r:field(f.sender_nonce, 8, "the sender nonce")
    r:field(f.receiver_nonce, 8, "the receiver nonce")
end

local function keepalive_fields(r, info)
    r:field(f.sender_nonce, 8, "the sender nonce")
    r:field(f.receiver_nonce, 8, "the receiver nonce")
    r:field(f.keepalive_sent_at, 8, "sent at")
    local echo_range, echo_item = r:field(f.keepalive_echo, 8, "the echo")
    if not echo_range then return nil end
    if echo_range:uint64() == UInt64(0) then
        echo_item:append_text(" (periodic)")
        return "periodic"
    end
    echo_item:append_text(" (answer)")
    return "answer, echo " .. u64_text(echo_range)
end

local function body_keepalive_v1(r, info)
    local kind = keepalive_fields(r, info)
    if kind then info[#info + 1] = kind end
end

local function body_nak(r, info)
    r:field(f.initiator_nonce, 8, "the initiator nonce")
    local reason_range = r:field(f.nak_reason, 1, "the reason")
    local length_range, length_item = r:field(f.nak_text_length, 1, "the text length")
    if reason_range then
        local reason = reason_range:uint()
        info[#info + 1] = nak_reasons[reason] or string.format("reason %d", reason)
    end
    if not length_range then return end
    local length = length_range:uint()
    if length > MAX_NAK_TEXT then
        length_item:add_proto_expert_info(ef.bad_field,
            string.format("Text of %d bytes, at most %d are allowed", length, MAX_NAK_TEXT))
    end
    if length == 0 then return end
    if not r:has(length, "the end of the text") then
        length = r.limit - r.at
        if length <= 0 then return end
    end
    local range = r.tvb(r.at, length)
    r.tree:add_packet_field(f.nak_text, range, ENC_UTF_8)
    r.at = r.at + length
    local ok, text = pcall(function() return range:string(ENC_UTF_8) end)
    if ok then info[#info + 1] = '"' .. text .. '"' end
end

-- Version 2: handshake numbers, cipher negotiation, X25519 ephemerals, KEEPALIVE sequence numbers.

local function body_ireq_v2(r, info)
    r:field(f.ireq_initiator_nonce, 8, "the initiator nonce")
    timestamp_field(r)
    local mode_range, mode_item = r:field(f.mode, 1, "the mode")
    local count_range, count_item = r:field(f.plan_count, 1, "the plan count")
    local mtu_range = r:field(f.mtu, 2, "the MTU")
    if mtu_range then info[#info + 1] = "MTU " .. mtu_range:uint() end
    mode_info(mode_range, mode_item, info)
    handshake_field(r, info)
    local offers_range, offers_item = r:field(f.offers, 1, "the offered ciphers")
    if offers_range then
        offers_item:add(f.offers_clear, offers_range)
        offers_item:add(f.offers_aes, offers_range)
        offers_item:add(f.offers_chacha, offers_range)
        local names = offered(offers_range:uint())
        local text = #names > 0 and table.concat(names, ",") or "none"
        offers_item:append_text(" (" .. text .. ")")
        info[#info + 1] = "offers " .. text
    end
    local flags_range, flags_item = r:field(f.ireq_flags, 1, "the IREQ flags")
    if flags_range then
        flags_item:add(f.ireq_flags_aes, flags_range)
        if bit.band(flags_range:uint(), IREQ_FLAG_AES) ~= 0 then flags_item:append_text(" (AES instructions)") end
    end
    r:reserved(1)
    ephemeral_field(r)
    plan_field(r, count_range, count_item, info)
end

local function body_ack_v2(r, info)
    r:field(f.responder_nonce, 8, "the responder nonce")
    r:field(f.initiator_nonce, 8, "the initiator nonce")
    local mtu_range = r:field(f.mtu, 2, "the MTU")
    if mtu_range then info[#info + 1] = "MTU " .. mtu_range:uint() end
    local mode_range, mode_item = r:field(f.mode, 1, "the mode")
    mode_info(mode_range, mode_item, info)
    handshake_field(r, info)
    local cipher_range, cipher_item = r:field(f.cipher, 1, "the cipher")
    if cipher_range then
        local cipher = cipher_range:uint()
        info[#info + 1] = cipher_names[cipher] or string.format("cipher %d", cipher)
        if not cipher_names[cipher] then
            cipher_item:add_proto_expert_info(ef.bad_field, string.format(
                "Cipher %d (not 0 clear, 1 aes-256-gcm or 2 chacha20-poly1305)", cipher))
        end
    end
    r:reserved(3)
    ephemeral_field(r)
end

local function body_icon_v2(r, info)
    r:field(f.initiator_nonce, 8, "the initiator nonce")
    r:field(f.responder_nonce, 8, "the responder nonce")
    handshake_field(r, info)
    r:reserved(7)
end

local function body_keepalive_v2(r, info)
    local kind = keepalive_fields(r, info)
    local sequence = r:field(f.keepalive_sequence, 8, "the sequence number")
    if sequence then info[#info + 1] = "sequence " .. u64_text(sequence) end
    if kind then info[#info + 1] = kind end
end

local bodies = {
    [OLD_PROTOCOL_VERSION] = {
        [CODE.IREQ] = body_ireq_v1,
        [CODE.IACK] = body_ack_v1,
        [CODE.IRDY] = body_ack_v1,
        [CODE.ICON] = body_icon_v1,
        [CODE.CREQ] = body_creq,
        [CODE.KEEPALIVE] = body_keepalive_v1,
        [CODE.NAK] = body_nak,
    },
    [PROTOCOL_VERSION] = {
        [CODE.IREQ] = body_ireq_v2,
        [CODE.IACK] = body_ack_v2,
        [CODE.IRDY] = body_ack_v2,
        [CODE.ICON] = body_icon_v2,
        [CODE.CREQ] = body_creq,
        [CODE.KEEPALIVE] = body_keepalive_v2,
        [CODE.NAK] = body_nak,
    },
}

-- Control datagrams --------------------------------------------------------------------------------

local function dissect_control(tvb, pinfo, tree)
    local length = tvb:reported_length_remaining(0)
    local captured = tvb:len()
    tree:add(f.kind, tvb(0, 1), "control")
    pinfo.cols.info:set("VELA control")
    if length < HEADER_LENGTH or captured < HEADER_LENGTH then
        tree:add_proto_expert_info(ef.truncated,
            string.format("A %d-byte control datagram is shorter than the %d-byte header", length, HEADER_LENGTH))
        if captured > 1 then tree:add(f.payload, tvb(1)) end
        pinfo.cols.info:append(" (truncated header)")
        return
    end
    local header = tree:add(vela, tvb(0, HEADER_LENGTH), "Control header")
    local code = tvb(1, 1):uint()
    local version = tvb(2, 1):uint()
    local vid = tvb(3, 1):uint()
    local body_length = tvb(4, 2):uint()
    local flags = tvb(6, 1):uint()
    local name = code_names[code] or string.format("code %d", code)

    local code_item = header:add(f.code, tvb(1, 1))
    local version_item = header:add(f.version, tvb(2, 1))
    local vid_item = header:add(f.vid, tvb(3, 1))
    local length_item = header:add(f.body_length, tvb(4, 2))
    local flags_item = header:add(f.flags, tvb(6, 1))
    flags_item:add(f.flags_mac, tvb(6, 1))
    local reserved_item = header:add(f.reserved, tvb(7, 1))
    header:append_text(string.format(": %s, version %d, vid %d, body %d bytes%s", name, version, vid, body_length,
        bit.band(flags, FLAG_MAC) ~= 0 and ", MAC" or ""))

    -- The body layouts of the version, or nil: an unknown version's body is shown undecoded.
    local layouts = bodies[version]
    local info = { "VELA", name, "vid " .. vid }
    if version ~= PROTOCOL_VERSION then info[1] = string.format("VELA v%d", version) end
    if not code_names[code] then
        code_item:add_proto_expert_info(ef.unknown_code, string.format("Unknown VC code %d", code))
    end
    if version == OLD_PROTOCOL_VERSION then
        version_item:add_proto_expert_info(ef.old_version, string.format(
            "Version %d: an older peer (a version %d daemon answers its IREQ with a version %d NAK to upgrade)",
            version, PROTOCOL_VERSION, version))
    elseif not layouts then
        version_item:add_proto_expert_info(ef.bad_version, string.format(
            "Version %d; this dissector knows versions %d and %d", version, OLD_PROTOCOL_VERSION, PROTOCOL_VERSION))
    end
    if vid == 0 and code ~= CODE.NOP and code_names[code] then
        vid_item:add_proto_expert_info(ef.bad_field, name .. " for vid 0 (only NOP may have vid 0)")
    end
    if bit.band(flags, bit.bnot(FLAG_MAC)) ~= 0 then
        flags_item:add_proto_expert_info(ef.bad_field, "Reserved flag bits are set")
    end
    if tvb(7, 1):uint() ~= 0 then
        reserved_item:add_proto_expert_info(ef.bad_field, "Reserved byte is not zero")
    end
    if length > MAX_CONTROL_LENGTH then
        tree:add_proto_expert_info(ef.bad_length,
            string.format("%d bytes is over the %d-byte limit of a control datagram", length, MAX_CONTROL_LENGTH))
    end

    local mac_length = bit.band(flags, FLAG_MAC) ~= 0 and MAC_LENGTH or 0
    local expected = HEADER_LENGTH + body_length + mac_length
    if length < expected then
        length_item:add_proto_expert_info(ef.truncated,
            string.format("The datagram has %d bytes, the header announces %d", length, expected))
    elseif length > expected then
        length_item:add_proto_expert_info(ef.bad_length,
            string.format("%d bytes past the end the header announces", length - expected))
    end

    -- The body is what the header announces, cut to what was captured.
    local body_end = math.min(HEADER_LENGTH + body_length, captured)
    local fixed = layouts and FIXED_BODY[version][code]
    if fixed and body_length < fixed then
        length_item:add_proto_expert_info(ef.truncated,
            string.format("%s body of %d bytes, needs at least %d", name, body_length, fixed))
    end
    if body_end > HEADER_LENGTH or (code_names[code] and code ~= CODE.NOP) then
        local body_tree
        if body_end > HEADER_LENGTH then
            body_tree = tree:add(vela, tvb(HEADER_LENGTH, body_end - HEADER_LENGTH),
                name .. (layouts and " body" or string.format(" body (version %d: not decoded)", version)))
        else
            body_tree = tree:add(vela, name .. " body (empty)")
        end
        local r = reader(tvb, body_tree, HEADER_LENGTH, body_end)
        local dissect_body = layouts and layouts[code]
        if dissect_body then
            dissect_body(r, info)
            if not r.short and r.at < HEADER_LENGTH + body_length and r.at < captured then
                local extra = r.tvb(r.at, body_end - r.at)
                body_tree:add(f.trailing, extra):add_proto_expert_info(ef.bad_length,
                    string.format("%s body has %d bytes past its fields", name, body_end - r.at))
            end
        elseif body_end > HEADER_LENGTH then
            body_tree:add(code == CODE.NOP and f.padding or f.payload, tvb(HEADER_LENGTH, body_end - HEADER_LENGTH))
        end
    end

    -- An IACK or IRDY names the circuit's cipher (version 1 had none: clear).
    if (code == CODE.IACK or code == CODE.IRDY) and vid ~= 0 then
        if version == OLD_PROTOCOL_VERSION then
            learn_cipher(pinfo, vid, CIPHER.CLEAR, name)
        elseif version == PROTOCOL_VERSION and body_length >= 21 and captured >= HEADER_LENGTH + 21 then
            local cipher = tvb(HEADER_LENGTH + 20, 1):uint()
            if cipher_names[cipher] then learn_cipher(pinfo, vid, cipher, name) end
        end
    end

    if mac_length > 0 then
        local mac_at = HEADER_LENGTH + body_length
        if mac_at + MAC_LENGTH <= captured then
            -- Made with the pre-shared key, or a session's control key (ICON, KEEPALIVE, CREQ of a keyed
            -- circuit): either way not checked here.
            tree:add(f.mac, tvb(mac_at, MAC_LENGTH)):append_text(" (not verified)")
        elseif mac_at < captured then
            tree:add(f.mac, tvb(mac_at)):add_proto_expert_info(ef.truncated, "The MAC is cut short")
        end
    end
    if length > expected and expected < captured then
        tree:add(f.trailing, tvb(expected))
    end

    local text = table.concat(info, " ")
    pinfo.cols.info:set(text)
    tree:append_text(", " .. (text:gsub("^VELA ", "")))
end

-- Data datagrams -----------------------------------------------------------------------------------

-- "ip" or "ipv6" when the payload is an IP packet of exactly its length, otherwise nil.
local function ip_packet(payload, length)
    local captured = payload:len()
    local nibble = captured > 0 and bit.rshift(payload(0, 1):uint(), 4) or 0
    if nibble == 4 and length >= 20 and captured >= 4 and payload(2, 2):uint() == length then return "ip" end
    if nibble == 6 and length >= 40 and captured >= 6 and 40 + payload(4, 2):uint() == length then
        return "ipv6"
    end
    return nil
end

-- EtherTypes a tap carries often enough to tell an Ethernet frame from encrypted bytes.
local ETHERTYPES = {}
for _, t in ipairs({
    0x0800, 0x0806, 0x0842, 0x22F0, 0x22F3, 0x6558, 0x8035, 0x8100, 0x86DD, 0x8808, 0x8809, 0x8847, 0x8848,
    0x8863, 0x8864, 0x886F, 0x888E, 0x8892, 0x889A, 0x88A4, 0x88A8, 0x88B5, 0x88B6, 0x88CC, 0x88E1, 0x88E5,
    0x88E7, 0x88F7, 0x8902, 0x8906, 0x8914, 0x893A, 0x9000, 0x9100,
}) do ETHERTYPES[t] = true end

-- Whether the payload looks like an Ethernet frame: a unicast source address and a common EtherType, or an
-- 802.3 length field that matches the frame (padded to 60 bytes at most).
local function ethernet_frame(payload, length)
    if length < 14 or payload:len() < 14 then return false end
    if bit.band(payload(6, 1):uint(), 1) ~= 0 then return false end
    local ethertype = payload(12, 2):uint()
    if ethertype <= 1500 then return 14 + ethertype == length or (length <= 60 and 14 + ethertype <= length) end
    return ETHERTYPES[ethertype] == true
end

-- "ip", "ipv6" or "eth_withoutfcs" for a clear data payload (tvb of the payload alone; `length` is its
-- length on the wire, which the subset tvb does not keep when the capture was cut short by a snapshot
-- length).
local function payload_dissector(payload, length)
    local choice = vela.prefs.payload
    if choice == PAYLOAD_TAP then return "eth_withoutfcs" end
    if choice == PAYLOAD_TUN then
        local captured = payload:len()
        local nibble = captured > 0 and bit.rshift(payload(0, 1):uint(), 4) or 0
        return nibble == 6 and "ipv6" or "ip"
    end
    return ip_packet(payload, length) or "eth_withoutfcs"
end

-- Whether a data payload is taken for a sealed frame, and why: nil (the preference says), the circuit's
-- IACK or IRDY in the capture ({ frame, cipher, name }), or "guess" (the auto heuristic).
local function is_sealed(payload, length, pinfo, vid)
    local choice = vela.prefs.sealed
    if choice == SEALED_ALWAYS then return true, nil end
    if choice == SEALED_CLEAR then return false, nil end
    local learned = learned_cipher(pinfo, vid)
    if learned then return learned.cipher ~= CIPHER.CLEAR, learned end
    if length < MIN_SEALED then return false, nil end
    local mode = vela.prefs.payload
    local clear
    if mode == PAYLOAD_TAP then
        clear = ethernet_frame(payload, length)
    elseif mode == PAYLOAD_TUN then
        clear = ip_packet(payload, length) ~= nil
    else
        clear = ip_packet(payload, length) ~= nil or ethernet_frame(payload, length)
    end
    return not clear, "guess"
end

-- A sealed frame after the vid byte: key epoch, counter (low 32 bits), encrypted frame, tag. Returns the
-- info text.
local function dissect_sealed(tvb, tree, why)
    local length = tvb:reported_length_remaining(1)
    local captured = tvb:len() - 1
    local sealed = tree:add(f.sealed, tvb(1, captured))
    sealed:set_text(string.format("Sealed frame (%d bytes: epoch, counter, %s encrypted, tag): not decrypted",
        length, length >= MIN_SEALED and tostring(length - SEALED_HEADER - TAG_LENGTH) .. " bytes" or "?"))
    if why == "guess" then
        sealed:add(vela, "[Taken for sealed: no IACK of this circuit in the capture, and the payload is neither "
            .. "an Ethernet frame nor an IP packet (preference Sealed data frames: auto)]")
    elseif why then
        sealed:add(vela, string.format("[Sealed with %s: the circuit's %s in frame %d]",
            cipher_names[why.cipher] or "?", why.name, why.frame))
    else
        sealed:add(vela, "[Taken for sealed: preference Sealed data frames: sealed]")
    end
    sealed:add(f.sealed_epoch, tvb(1, 1))
    local epoch = tvb(1, 1):uint()
    local counter
    if captured >= SEALED_HEADER then
        local counter_range = tvb(1 + SEALED_EPOCH_LENGTH, SEALED_COUNTER_LENGTH)
        sealed:add(f.sealed_counter, counter_range)
        counter = counter_range:uint()
    end
    local encrypted = length - SEALED_HEADER - TAG_LENGTH
    if length < MIN_SEALED then
        sealed:add_proto_expert_info(ef.malformed, string.format(
            "A sealed frame of %d bytes after the vid byte: it needs at least %d (%d epoch, %d counter, "
                .. "1 or more encrypted, %d tag)",
            length, MIN_SEALED, SEALED_EPOCH_LENGTH, SEALED_COUNTER_LENGTH, TAG_LENGTH))
        if captured > SEALED_HEADER then sealed:add(f.payload, tvb(1 + SEALED_HEADER)) end
    else
        local at = 1 + SEALED_HEADER
        local shown = math.min(encrypted, captured - SEALED_HEADER)
        if shown > 0 then sealed:add(f.sealed_ciphertext, tvb(at, shown)) end
        sealed:add(f.sealed_length, encrypted):set_generated()
        local tag_at = at + encrypted
        if tag_at + TAG_LENGTH <= tvb:len() then
            sealed:add(f.sealed_tag, tvb(tag_at, TAG_LENGTH))
        elseif tag_at < tvb:len() then
            sealed:add(f.sealed_tag, tvb(tag_at))
        end
    end
    local text = string.format("sealed, epoch %d", epoch)
    if counter then text = text .. string.format(", counter %d", counter) end
    if encrypted > 0 then text = text .. string.format(" (%d bytes encrypted)", encrypted) end
    return text
end

local function dissect_data(tvb, pinfo, tree, root)
    local vid = tvb(0, 1):uint()
    tree:add(f.kind, tvb(0, 1), "data")
    tree:add(f.vid, tvb(0, 1))
    local label = "VELA data vid " .. vid
    tree:append_text(", data, vid " .. vid)
    pinfo.cols.info:set(label)
    if tvb:reported_length_remaining(1) <= 0 or tvb:len() <= 1 then
        if tvb:reported_length_remaining(1) <= 0 then
            tree:add_proto_expert_info(ef.runt, "A data datagram of one byte carries no frame")
            pinfo.cols.info:append(" (runt)")
        end
        return
    end
    local payload = tvb(1):tvb()
    local sealed, why = is_sealed(payload, tvb:reported_length_remaining(1), pinfo, vid)
    if sealed then
        tree:append_text(", sealed frame (encrypted)")
        pinfo.cols.info:set(label .. ": " .. dissect_sealed(tvb, tree, why))
        return
    end
    local name = payload_dissector(payload, tvb:reported_length_remaining(1))
    local dissector = inner(name)
    tree:append_text(name == "eth_withoutfcs" and ", Ethernet frame" or ", IP packet")
    pinfo.cols.info:clear()
    local ok, err = true, nil
    if dissector then
        ok, err = pcall(function() dissector:call(payload, pinfo, root) end)
    else
        tree:add(f.payload, tvb(1))
    end
    if not ok then
        tree:add_proto_expert_info(ef.inner, string.format("%s: %s", name, tostring(err)))
    end
    local inner_text = tostring(pinfo.cols.info)
    if inner_text ~= "" and inner_text:sub(1, 1) ~= "(" then
        pinfo.cols.info:prepend(label .. ": ")
    else
        pinfo.cols.info:set(label)
    end
end

-- Entry point --------------------------------------------------------------------------------------

function vela.dissector(tvb, pinfo, root)
    local length = tvb:reported_length_remaining(0)
    pinfo.cols.protocol:set("VELA")
    local added, tree = pcall(function() return root:add(vela, tvb()) end)
    if not added then tree = root:add(vela) end -- an empty tvb has no range to show
    local ok, err = pcall(function()
        if length <= 0 or tvb:len() == 0 then
            tree:add_proto_expert_info(ef.malformed, "Empty datagram")
            pinfo.cols.info:set("VELA empty datagram")
            return
        end
        if tvb(0, 1):uint() == 0 then
            dissect_control(tvb, pinfo, tree)
        else
            dissect_data(tvb, pinfo, tree, root)
        end
    end)
    if not ok then
        -- A bug in this file, not in the packet; shown instead of a Lua error.
        tree:add_proto_expert_info(ef.lua, "Dissector error: " .. tostring(err))
    end
    return tvb:len()
end

udp_table:add(DEFAULT_PORT, vela)
