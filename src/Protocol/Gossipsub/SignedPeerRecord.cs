using System.Text;
using Google.Protobuf;
using Potluck.Protocol.Identity;
using Potluck.Protocol.Multiformats;

namespace Potluck.Protocol.Gossipsub;

/// <summary>
/// Reads the addresses out of a signed peer record (RFC 0002 signed envelope carrying an RFC 0003 peer record),
/// as PRUNE peer exchange sends them. The envelope's signature and key are checked against the expected peer.
/// </summary>
internal static class SignedPeerRecord
{
    private static readonly byte[] Domain = Encoding.ASCII.GetBytes("libp2p-routing-state");
    private static readonly byte[] PayloadType = [0x03, 0x01];

    public const int MaxSize = 4096;
    public const int MaxAddresses = 16;

    public static bool TryReadAddresses(ReadOnlySpan<byte> record, PeerId expected, out IReadOnlyList<Multiaddr> addresses)
    {
        addresses = [];
        if (record.Length == 0 || record.Length > MaxSize)
        {
            return false;
        }
        try
        {
            var envelope = Pb.Envelope.Parser.ParseFrom(record);
            if (!envelope.PayloadType.Span.SequenceEqual(PayloadType)
                || !PublicKey.TryFromProtobuf(envelope.PublicKey.Span, out var key) || !expected.Matches(key)
                || !key.Verify(SignedBytes(envelope), envelope.Signature.Span))
            {
                return false;
            }
            var peerRecord = Pb.PeerRecord.Parser.ParseFrom(envelope.Payload);
            if (!PeerId.TryFromBytes(peerRecord.PeerId.Span, out var subject) || subject != expected)
            {
                return false;
            }
            var list = new List<Multiaddr>();
            foreach (var a in peerRecord.Addresses.Take(MaxAddresses))
            {
                if (Multiaddr.TryFromBytes(a.Multiaddr.Span, out var address))
                {
                    list.Add(address);
                }
            }
            addresses = list;
            return true;
        }
        catch (InvalidProtocolBufferException)
        {
            return false;
        }
    }

    /// <summary>Builds a signed peer record (for tests and for a later PX sender).</summary>
    public static byte[] Create(ISigner key, ulong seq, IEnumerable<Multiaddr> addresses)
    {
        var record = new Pb.PeerRecord { PeerId = ByteString.CopyFrom(key.PeerId.Bytes), Seq = seq };
        foreach (var a in addresses)
        {
            record.Addresses.Add(new Pb.PeerRecord.Types.AddressInfo { Multiaddr = ByteString.CopyFrom(a.ToBytes()) });
        }
        var envelope = new Pb.Envelope
        {
            PublicKey = ByteString.CopyFrom(key.PublicKey.ToProtobuf()),
            PayloadType = ByteString.CopyFrom(PayloadType),
            Payload = record.ToByteString(),
        };
        envelope.Signature = ByteString.CopyFrom(key.Sign(SignedBytes(envelope)));
        return envelope.ToByteArray();
    }

    private static byte[] SignedBytes(Pb.Envelope envelope)
    {
        var buffer = new List<byte>();
        void Field(ReadOnlySpan<byte> bytes)
        {
            buffer.AddRange(Varint.Encode((ulong)bytes.Length));
            buffer.AddRange(bytes.ToArray());
        }
        Field(Domain);
        Field(envelope.PayloadType.Span);
        Field(envelope.Payload.Span);
        return [.. buffer];
    }
}
