using Microsoft.Data.Sqlite;
using Microsoft.Extensions.Time.Testing;
using Potluck.Protocol.Identity;
using Potluck.Scheduler.Credits;
using Potluck.Scheduler.Storage;
using Potluck.Scheduler.Verification;
using static Potluck.Scheduler.Tests.Ledger.CreditsFixtures;

namespace Potluck.Scheduler.Tests.Storage;

/// <summary>
/// The in-memory stand-in's connections hold none of the virtual-table modules this e_sqlite3 registers at every open (FTS,
/// R-Tree, Geopoly) and none of the extensions' SQL functions stays callable (some pointed at a dropped module's data);
/// the ledger, reputation and peer tables work on such a connection as before.
/// </summary>
public class StandInExtensionsTests
{
    private static readonly string[] ExtensionModules = ["fts3", "fts4", "fts3tokenize", "fts4aux", "fts5", "fts5vocab", "rtree", "rtree_i32", "geopoly"];

    private static List<string> Modules(SqliteConnection connection) => SqlNames.Of(connection, "SELECT name FROM pragma_module_list ORDER BY name");

    private static string? Failure(SqliteConnection connection, string sql)
    {
        using var command = connection.CreateCommand();
        command.CommandText = sql;
        try
        {
            command.ExecuteNonQuery();
            return null;
        }
        catch (SqliteException e)
        {
            return e.Message;
        }
    }

    [Test]
    public void StandInConnection_HoldsNoExtensionModule_ItsFunctionsFailCleanly_TheStoresStillWork()
    {
        var dir = Path.Combine(Path.GetTempPath(), "potluck-ext-" + Guid.NewGuid().ToString("N"));
        using var keep = SqliteMemory.Keep(Path.Combine(dir, CreditLedger.FileName));
        Assert.That(Modules(keep), Has.None.AnyOf(ExtensionModules), "the extensions' modules are dropped at open");
        Assert.That(Failure(keep, "CREATE VIRTUAL TABLE t USING fts5(x)"), Does.Contain("no such module"));
        Assert.That(Failure(keep, "CREATE VIRTUAL TABLE r USING rtree(id, x0, x1)"), Does.Contain("no such module"));
        // fts5() and fts3_tokenizer() carried a pointer to their module's data: calling them now fails, never reads it.
        Assert.That(Failure(keep, "SELECT fts5(NULL)"), Does.Contain("no such function"));
        Assert.That(Failure(keep, "SELECT fts3_tokenizer('simple')"), Does.Contain("no such function"));
        Assert.That(Failure(keep, "SELECT geopoly_area(NULL)"), Does.Contain("no such function"));
        Assert.That(Failure(keep, "SELECT json_valid('[1]'), lower('A'), abs(-1), printf('%d', 1)"), Is.Null, "built-in functions stay");

        var owner = PrivateKey.FromRandom(new Random(11)).PeerId;
        var time = new FakeTimeProvider(Epoch);
        using (var ledger = CreditLedger.Open(dir, owner, new CreditsOptions { InitialGrant = 77 }, time, inMemory: true))
        {
            Assert.That(ledger.Balance(), Is.EqualTo(77));
            Assert.That(ledger.SumEntries(), Is.EqualTo(77));
        }
        using (var reputation = ReputationDatabase.Open(dir, inMemory: true))
        {
            reputation.Save([new(owner, new ProviderRecord(1, 2, 3, 0, null))]);
            Assert.That(reputation.Load(10), Has.Count.EqualTo(1));
        }
        using var reopened = CreditLedger.Open(dir, owner, new CreditsOptions { InitialGrant = 77 }, time, inMemory: true);
        Assert.That((reopened.Created, reopened.Balance()), Is.EqualTo((false, 77L)));
        Assert.That(Directory.Exists(dir), Is.False, "nothing reaches the disk");
    }
}
