using System.Text;
using Google.Protobuf;
using Potluck.Protocol.Identity;
using Potluck.Protocol.Multiformats;

namespace Potluck.Protocol.Relay;

/// <summary>
/// The reservation voucher of circuit relay v2: a <c>ReservationVoucher</c> record (relay, peer, expiration) in an
/// RFC 0002 signed envelope with domain <c>libp2p-relay-rsvp</c> and payload type 0x0302, signed by the relay.
/// </summary>
public static class RelayVoucher
{
    public const string Domain = "libp2p-relay-rsvp";
    private static readonly byte[] DomainBytes = Encoding.ASCII.GetBytes(Domain);
    private static readonly byte[] PayloadType = [0x03, 0x02];

    public static byte[] Create(ISigner relay, PeerId peer, ulong expiration)
    {
        var voucher = new Pb.ReservationVoucher
        {
            Relay = ByteString.CopyFrom(relay.PeerId.ToBytes()),
            Peer = ByteString.CopyFrom(peer.ToBytes()),
            Expiration = expiration,
        };
        var envelope = new Pb.Envelope
        {
            PublicKey = ByteString.CopyFrom(relay.PublicKey.ToProtobuf()),
            PayloadType = ByteString.CopyFrom(PayloadType),
            Payload = voucher.ToByteString(),
        };
        envelope.Signature = ByteString.CopyFrom(relay.Sign(SignedBytes(envelope.PayloadType.Span, envelope.Payload.Span)));
        return envelope.ToByteArray();
    }

    /// <summary>True when <paramref name="bytes"/> is a voucher signed by <paramref name="relay"/> for <paramref name="peer"/>.</summary>
    public static bool TryVerify(ReadOnlySpan<byte> bytes, PeerId relay, PeerId peer, out ulong expiration)
    {
        expiration = 0;
        try
        {
            var envelope = Pb.Envelope.Parser.ParseFrom(bytes);
            if (!envelope.PayloadType.Span.SequenceEqual(PayloadType)
                || !PublicKey.TryFromProtobuf(envelope.PublicKey.Span, out var key) || !relay.Matches(key)
                || !key.Verify(SignedBytes(envelope.PayloadType.Span, envelope.Payload.Span), envelope.Signature.Span))
            {
                return false;
            }
            var voucher = Pb.ReservationVoucher.Parser.ParseFrom(envelope.Payload);
            if (!PeerId.TryFromBytes(voucher.Relay.Span, out var r) || r != relay
                || !PeerId.TryFromBytes(voucher.Peer.Span, out var p) || p != peer)
            {
                return false;
            }
            expiration = voucher.Expiration;
            return true;
        }
        catch (InvalidProtocolBufferException)
        {
            return false;
        }
    }

    private static byte[] SignedBytes(ReadOnlySpan<byte> payloadType, ReadOnlySpan<byte> payload)
    {
        var buffer = new List<byte>();
        void Field(ReadOnlySpan<byte> bytes)
        {
            buffer.AddRange(Varint.Encode((ulong)bytes.Length));
            buffer.AddRange(bytes.ToArray());
        }
        Field(DomainBytes);
        Field(payloadType);
        Field(payload);
        return [.. buffer];
    }
}
