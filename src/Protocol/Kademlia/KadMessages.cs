using Google.Protobuf;
using Potluck.Protocol.Identity;
using Potluck.Protocol.Multiformats;

namespace Potluck.Protocol.Kademlia;

/// <summary>A peer named in a DHT message: its id and the addresses sent with it.</summary>
public sealed record KadPeer(PeerId Id, IReadOnlyList<Multiaddr> Addresses);

/// <summary>Bounded decoding of <c>dht.proto</c> messages and their peer lists.</summary>
internal static class KadMessages
{
    private const int CloserPeersField = 8;
    private const int ProviderPeersField = 9;

    /// <summary>
    /// Parses one message after counting its peer entries without materialising them, so a message full of
    /// tiny entries cannot cost more than the limit. Returns a reason on failure.
    /// </summary>
    public static bool TryParse(byte[] bytes, KademliaOptions options, out Pb.Message message, out string error)
    {
        message = new Pb.Message();
        error = "";
        try
        {
            var scan = new CodedInputStream(bytes);
            var peers = 0;
            uint tag;
            while ((tag = scan.ReadTag()) != 0)
            {
                var field = WireFormat.GetTagFieldNumber(tag);
                if ((field == CloserPeersField || field == ProviderPeersField) && ++peers > options.MaxPeersPerMessage)
                {
                    error = $"more than {options.MaxPeersPerMessage} peers in one message";
                    return false;
                }
                scan.SkipLastField();
            }
            message = Pb.Message.Parser.ParseFrom(bytes);
        }
        catch (InvalidProtocolBufferException)
        {
            error = "malformed protobuf";
            return false;
        }
        if (message.Key.Length > options.MaxKeySize)
        {
            error = "key over the size limit";
            return false;
        }
        if (message.Record is { } r && (r.Key.Length > options.MaxKeySize || r.Value.Length > options.MaxRecordSize))
        {
            error = "record over the size limit";
            return false;
        }
        if (!Enum.IsDefined(message.Type))
        {
            error = "unknown message type";
            return false;
        }
        return true;
    }

    /// <summary>The peers of a list, skipping entries with an unreadable id or <paramref name="self"/>; unreadable addresses are dropped.</summary>
    public static List<KadPeer> ReadPeers(IEnumerable<Pb.Message.Types.Peer> peers, KademliaOptions options, PeerId self)
    {
        var result = new List<KadPeer>();
        var seen = new HashSet<PeerId>();
        foreach (var p in peers)
        {
            if (!PeerId.TryFromBytes(p.Id.Span, out var id) || id == self || !seen.Add(id))
            {
                continue;
            }
            var addresses = new List<Multiaddr>();
            foreach (var raw in p.Addrs.Take(options.MaxAddressesPerPeer))
            {
                if (Multiaddr.TryFromBytes(raw.Span, out var a))
                {
                    var peerPart = a.PeerId;
                    if (peerPart is null || peerPart.Value == id)
                    {
                        addresses.Add(a.WithoutPeer());
                    }
                }
            }
            result.Add(new KadPeer(id, addresses));
        }
        return result;
    }

    public static Pb.Message.Types.Peer ToPb(PeerId id, IEnumerable<Multiaddr> addresses, bool connected)
    {
        var peer = new Pb.Message.Types.Peer
        {
            Id = ByteString.CopyFrom(id.Bytes),
            Connection = connected ? Pb.Message.Types.ConnectionType.Connected : Pb.Message.Types.ConnectionType.NotConnected,
        };
        foreach (var a in addresses)
        {
            peer.Addrs.Add(ByteString.CopyFrom(a.Bytes.Span));
        }
        return peer;
    }
}
