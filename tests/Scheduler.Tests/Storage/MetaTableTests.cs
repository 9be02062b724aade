using Microsoft.Data.Sqlite;
using Microsoft.Extensions.Time.Testing;
using Potluck.Protocol.Identity;
using Potluck.Scheduler.Credits;
using Potluck.Scheduler.Storage;
using static Potluck.Scheduler.Tests.Ledger.CreditsFixtures;

namespace Potluck.Scheduler.Tests.Storage;

/// <summary>
/// A new ledger's <c>meta</c> table (two rows: the schema version and the owner) is one B-tree keyed by name
/// (<c>WITHOUT ROWID</c>), not a table and its key's index: a page less in every ledger; it reads back the same.
/// </summary>
public class MetaTableTests
{
    private static List<string> MetaObjects(SqliteConnection connection) => SqlNames.Of(connection, "SELECT name FROM sqlite_schema WHERE tbl_name = 'meta' ORDER BY name");

    private static T WithFile<T>(string path, Func<SqliteConnection, T> read)
    {
        using var connection = new SqliteConnection($"Data Source={path};Mode=ReadOnly;Pooling=False");
        connection.Open();
        return read(connection);
    }

    [TestCase(true)]
    [TestCase(false)]
    public void NewLedger_MetaIsOneBTree_AndReopensAsItsOwnersLedger(bool inMemory)
    {
        var dir = Path.Combine(Path.GetTempPath(), "potluck-meta-" + Guid.NewGuid().ToString("N"));
        var owner = PrivateKey.FromRandom(new Random(12)).PeerId;
        var other = PrivateKey.FromRandom(new Random(13)).PeerId;
        var time = new FakeTimeProvider(Epoch);
        var path = Path.Combine(dir, CreditLedger.FileName);
        using var keep = inMemory ? SqliteMemory.Keep(path) : null;
        try
        {
            using (var ledger = CreditLedger.Open(dir, owner, new CreditsOptions { InitialGrant = 5 }, time, inMemory))
            {
                Assert.That(ledger.Created, Is.True);
            }
            Assert.That(keep is null ? WithFile(path, MetaObjects) : MetaObjects(keep), Is.EqualTo(new[] { "meta" }), "no separate index for meta's key");
            using (var reopened = CreditLedger.Open(dir, owner, new CreditsOptions { InitialGrant = 5 }, time, inMemory))
            {
                Assert.That((reopened.Created, reopened.Balance()), Is.EqualTo((false, 5L)));
            }
            Assert.That(() => CreditLedger.Open(dir, other, new CreditsOptions { InitialGrant = 5 }, time, inMemory).Dispose(),
                Throws.InstanceOf<LedgerException>(), "the owner is read back from meta: another identity is refused");
        }
        finally
        {
            if (!inMemory && Directory.Exists(dir))
            {
                Directory.Delete(dir, true);
            }
        }
    }
}
