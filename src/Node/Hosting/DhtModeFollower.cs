using Potluck.Protocol.AutoNat;
using Potluck.Protocol.Kademlia;

namespace Potluck.Node.Hosting;

/// <summary>
/// Keeps a listening node's DHT mode in step with AutoNAT (<c>kademlia:followReachability</c>, go-libp2p's ModeAuto):
/// private → client (nobody can dial us, so we must not be handed out as a DHT server), public → server; unknown leaves
/// the mode as it is (a loopback or LAN cluster without AutoNAT servers stays a DHT of servers).
/// </summary>
internal sealed class DhtModeFollower : IDisposable
{
    private readonly AutoNatService _autoNat;
    private readonly KademliaService _dht;

    public DhtModeFollower(AutoNatService autoNat, KademliaService dht)
    {
        _autoNat = autoNat;
        _dht = dht;
        autoNat.Changed += Apply;
        Apply();
    }

    private void Apply()
    {
        switch (_autoNat.Reachability)
        {
            case Reachability.Private:
                _dht.SetMode(KademliaMode.Client);
                break;
            case Reachability.Public:
                _dht.SetMode(KademliaMode.Server);
                break;
        }
    }

    public void Dispose() => _autoNat.Changed -= Apply;
}
